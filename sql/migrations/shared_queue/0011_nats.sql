-- depends: 0009_cold_storage
-- The NATS bridge (seed 001, "Migration from NATS"): agents still on NATS reach the bus through one
-- bridge identity (an entry of bus.instances flagged `bridge`: reply queues, no database of its own),
-- and every NATS request it takes is recorded once here, keyed by the request's id (or the NATS
-- message id), with the pgmq msg_id and the NATS reply subject. The operator's tables
-- (own_shared_queue); the bridge role writes them only through nats.* functions.
ALTER TABLE bus.instances ADD COLUMN bridge boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN bus.instances.bridge IS
    'A bridge (the NATS bridge): an identity with its own reply queues, but no Singularity database or inboxes.';

CREATE SCHEMA nats;
COMMENT ON SCHEMA nats IS 'The NATS bridge''s ledger and migration phase (docs/nats.md).';

-- The request queues the bridge takes from NATS, and the kind of queue their results come back on.
CREATE TABLE nats.bridged_queues (
    queue       text PRIMARY KEY,
    result_kind text NOT NULL
);
INSERT INTO nats.bridged_queues (queue, result_kind) VALUES
    ('llm_requests', 'llm_results'), ('approval_requests', 'approval_responses'),
    ('question_requests', 'question_responses'), ('job_requests', 'job_results');
COMMENT ON TABLE nats.bridged_queues IS 'Request queues bridged from NATS and the result kind answering each.';

CREATE TABLE nats.requests (
    queue          text NOT NULL REFERENCES nats.bridged_queues (queue),
    request_key    text NOT NULL CHECK (length(request_key) BETWEEN 1 AND 200),
    subject        text NOT NULL,
    via            text NOT NULL CHECK (via IN ('core', 'jetstream')),
    status         text NOT NULL CHECK (status IN ('enqueued', 'rejected', 'answered')),
    request_id     text,
    msg_id         bigint,
    reply_subject  text,
    content_sha256 text NOT NULL,
    duplicates     int NOT NULL DEFAULT 0,
    error          text,
    payload        text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    answered_at    timestamptz,
    result_queue   text,
    result_msg_id  bigint,
    PRIMARY KEY (queue, request_key),
    CHECK (status <> 'rejected' OR error IS NOT NULL),
    CHECK (status = 'rejected' OR request_id IS NOT NULL OR msg_id IS NULL)
);
CREATE UNIQUE INDEX requests_request_id ON nats.requests (queue, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX requests_received_at ON nats.requests (received_at);
CREATE INDEX requests_pending ON nats.requests (received_at) WHERE status = 'enqueued';
COMMENT ON TABLE nats.requests IS
    'One row per NATS request taken by the bridge: enqueued (pgmq msg_id), rejected (why, and the payload), answered.';
COMMENT ON COLUMN nats.requests.request_key IS 'The dedupe key: the message''s id, else its Nats-Msg-Id, else a key the bridge made.';
COMMENT ON COLUMN nats.requests.payload IS 'The message as received, kept for rejected ones (the enqueued ones are in pgmq and its archive).';

-- The migration phase: 1 both active, 2 cutover (no new NATS requests; the stream drains), 3 retired.
CREATE TABLE nats.state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    phase      int NOT NULL DEFAULT 1 CHECK (phase BETWEEN 1 AND 3),
    changed_at timestamptz NOT NULL DEFAULT now(),
    note       text
);
INSERT INTO nats.state DEFAULT VALUES;
COMMENT ON TABLE nats.state IS 'Seed 001''s NATS migration phase, written by `orchestrator nats phase N`.';
