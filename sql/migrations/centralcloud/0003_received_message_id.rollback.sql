DROP INDEX centralcloud.received_message_id;
ALTER TABLE centralcloud.received DROP COLUMN message_id;
