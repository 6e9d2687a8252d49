DROP INDEX IF EXISTS centralcloud.received_instance_message;
DELETE FROM centralcloud.received WHERE conflict;
CREATE UNIQUE INDEX received_message_id ON centralcloud.received (message_id);
ALTER TABLE centralcloud.received DROP COLUMN content_sha256, DROP COLUMN conflict;
