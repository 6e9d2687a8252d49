-- depends: 0003_received_message_id
-- Trust (DESIGN.md 8b): the envelope-id ledger is scoped to the sending instance (its instance_id is
-- stamped by the bus from the sending role) and keeps the hash of each message, so another instance
-- reusing an id is not dropped as a "re-sent copy", and one instance reusing an id for other content
-- is recorded as a conflict (refused, counted), never folded and never silently dropped.
ALTER TABLE centralcloud.received ADD COLUMN content_sha256 text, ADD COLUMN conflict boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN centralcloud.received.content_sha256 IS 'ops.request_hash of the message: the same id with other content is a conflict.';
COMMENT ON COLUMN centralcloud.received.conflict IS 'true: the envelope id was already used by this instance for other content; not folded.';
DROP INDEX centralcloud.received_message_id;
CREATE UNIQUE INDEX received_instance_message ON centralcloud.received (instance_id, message_id) WHERE NOT conflict;
