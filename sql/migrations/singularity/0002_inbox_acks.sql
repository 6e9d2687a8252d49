-- Inbox messages folded in locally but not yet acknowledged in shared_queue. consume_inbox acks them
-- at its next run, after the transaction that folded them committed: a failure in between leaves the
-- message in the queue (redelivered, then dropped by outbox.inbox_seen), never lost.
CREATE TABLE outbox.inbox_acks (
    queue     text NOT NULL,
    msg_id    bigint NOT NULL,
    read_ct   int NOT NULL,
    folded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, msg_id)
);
COMMENT ON TABLE outbox.inbox_acks IS 'Inbox deliveries folded in and committed here, to be acked in shared_queue at the next run.';
