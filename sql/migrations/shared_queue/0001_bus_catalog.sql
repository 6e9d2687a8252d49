-- depends: 0000_ops
-- The bus catalog: what queues exist, what each kind of message must look like, who may
-- send or consume each kind (DESIGN.md section 5), and the Singularity instances.
CREATE SCHEMA bus;
COMMENT ON SCHEMA bus IS 'Our layer over pgmq: validation, fenced acks, retries, dead letters, retention, analytics.';

CREATE TABLE bus.settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bus.settings IS 'Operator settings set by migrate from env (e.g. retention_days).';

CREATE TABLE bus.queue_kinds (
    kind        text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z_]{2,30}$'),
    role        text NOT NULL CHECK (role IN ('request', 'result', 'inbox', 'event', 'dead_letter')),
    result_kind text REFERENCES bus.queue_kinds (kind),
    max_bytes   integer NOT NULL DEFAULT 1048576 CHECK (max_bytes > 0),
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    description text NOT NULL
);
COMMENT ON TABLE bus.queue_kinds IS 'One row per kind of queue; per-instance reply queues share their kind.';

CREATE TABLE bus.message_fields (
    kind      text NOT NULL REFERENCES bus.queue_kinds (kind) ON DELETE CASCADE,
    msg_type  text NOT NULL DEFAULT '*',      -- '*' = every message type of the kind
    field     text NOT NULL,
    json_type text NOT NULL CHECK (json_type IN ('string', 'number', 'integer', 'boolean', 'array', 'object', 'any')),
    required  boolean NOT NULL,
    nullable  boolean NOT NULL DEFAULT false,
    nonempty  boolean NOT NULL DEFAULT false,
    allowed   jsonb CHECK (allowed IS NULL OR jsonb_typeof(allowed) = 'array'),
    PRIMARY KEY (kind, msg_type, field)
);
COMMENT ON TABLE bus.message_fields IS 'Message shape rules, enforced on every insert into a queue and mirrored by the Python client.';

CREATE TABLE bus.instances (
    instance_id text PRIMARY KEY CHECK (instance_id ~ '^[a-z][a-z0-9]{0,15}$'),
    role        name NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bus.instances IS 'Singularity instances: each has its own role and its own reply queues.';

CREATE TABLE bus.queues (
    queue_name  text PRIMARY KEY CHECK (queue_name ~ '^[a-z][a-z0-9_]{2,46}$'),
    kind        text NOT NULL REFERENCES bus.queue_kinds (kind),
    instance_id text REFERENCES bus.instances (instance_id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bus.queues IS 'Every queue the bus manages; reply queues carry the instance that consumes them.';

CREATE TABLE bus.flows (
    kind    text NOT NULL REFERENCES bus.queue_kinds (kind) ON DELETE CASCADE,
    service text NOT NULL CHECK (service IN ('singularity', 'genesis', 'nexus', 'centralcloud')),
    action  text NOT NULL CHECK (action IN ('send', 'consume')),
    PRIMARY KEY (kind, service, action)
);
COMMENT ON TABLE bus.flows IS 'The flow table of DESIGN.md section 5: which service may send or consume which kind.';

CREATE TABLE bus.prune_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ran_at    timestamptz NOT NULL DEFAULT now(),
    queue_name text NOT NULL,
    cutoff    timestamptz NOT NULL,
    deleted   bigint NOT NULL
);
COMMENT ON TABLE bus.prune_log IS 'What each retention run removed from each archive.';
