-- The bus envelope id of every consumed message: an instance's outbox drain that crashed between the
-- remote send and its local delete sends the same message again under a new msg_id; the envelope id
-- (the outbox row's ULID) is the same, so the second copy is dropped like any redelivery.
ALTER TABLE centralcloud.received ADD COLUMN message_id text;
CREATE UNIQUE INDEX received_message_id ON centralcloud.received (message_id);
