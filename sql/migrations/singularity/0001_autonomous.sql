-- depends: 0000_ops
-- Singularity: the database-side autonomous worker (seed 003). Tables only; behaviour lives in
-- sql/procedures/singularity/*.sql (re-applied on every migrate).
CREATE SCHEMA core;
COMMENT ON SCHEMA core IS 'Agents, tasks, sessions, analysis, learned patterns, knowledge, logs, job runs.';
CREATE SCHEMA outbox;
COMMENT ON SCHEMA outbox IS 'Messages written with the business row, drained to shared_queue by pg_cron.';

CREATE TABLE core.agents (
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    capacity       int NOT NULL DEFAULT 1 CHECK (capacity >= 0),
    load           int NOT NULL DEFAULT 0 CHECK (load >= 0),   -- assigned + running tasks (kept by triggers)
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'offline')),
    known_patterns jsonb NOT NULL DEFAULT '[]',
    knowledge_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.agents IS 'Agents of this instance; capacity = how many tasks one may hold at once.';

CREATE TABLE core.tasks (
    id             text PRIMARY KEY,
    kind           text NOT NULL DEFAULT 'task',
    payload        jsonb NOT NULL DEFAULT '{}',
    priority       int NOT NULL DEFAULT 0,                     -- higher first
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'assigned', 'running', 'completed', 'failed')),
    assigned_agent text REFERENCES core.agents (id),
    assigned_at    timestamptz,
    completed_at   timestamptz,
    result         jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'pending') = (assigned_agent IS NULL) OR status IN ('completed', 'failed'))
);
CREATE INDEX tasks_pending ON core.tasks (priority DESC, id) WHERE status = 'pending';
CREATE INDEX tasks_agent_active ON core.tasks (assigned_agent) WHERE status IN ('assigned', 'running');
CREATE INDEX tasks_done ON core.tasks (completed_at) WHERE status IN ('completed', 'failed');
COMMENT ON TABLE core.tasks IS 'Work for agents: pending -> assigned -> running -> completed | failed.';

CREATE TABLE core.tasks_archive (LIKE core.tasks INCLUDING DEFAULTS);
ALTER TABLE core.tasks_archive ADD PRIMARY KEY (id), ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
COMMENT ON TABLE core.tasks_archive IS 'Completed and failed tasks moved out of core.tasks by archive_completed_tasks().';

CREATE TABLE core.agent_sessions (
    id         text PRIMARY KEY,
    agent_id   text NOT NULL REFERENCES core.agents (id),
    state      jsonb,              -- plaintext never stays: the trigger moves it into state_enc
    state_enc  bytea,              -- pgp_sym_encrypt(state, key key_id)
    key_id     int,
    synced_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (state IS NULL),
    CHECK ((state_enc IS NULL) = (key_id IS NULL))
);
COMMENT ON TABLE core.agent_sessions IS 'Agent session state, encrypted at rest (key file readable only by the server).';

CREATE TABLE core.analysis_results (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id   text NOT NULL REFERENCES core.agents (id),
    result     jsonb NOT NULL,
    confidence numeric NOT NULL DEFAULT 0.5 CHECK (confidence BETWEEN 0 AND 1),
    learned    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT result_needs_patterns_array_of_objects_with_key CHECK (
        coalesce(jsonb_typeof(result->'patterns'), 'missing') = 'array'
        AND NOT jsonb_path_exists(result, '$.patterns[*] ? (@.type() != "object" || !exists(@.key) || @.key.type() != "string" || @.key == "")'))
);
CREATE INDEX analysis_unlearned ON core.analysis_results (id) WHERE NOT learned;
CREATE INDEX analysis_agent_time ON core.analysis_results (agent_id, created_at);
COMMENT ON TABLE core.analysis_results IS 'What agents found; result = {"patterns": [{"key", "kind", "packages"}]}.';

CREATE TABLE core.learned_patterns (
    key             text PRIMARY KEY,
    kind            text NOT NULL DEFAULT 'pattern',
    occurrences     bigint NOT NULL DEFAULT 0,
    confidence      numeric NOT NULL DEFAULT 0 CHECK (confidence BETWEEN 0 AND 1),
    packages        text[] NOT NULL DEFAULT '{}',
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    source_instance text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    synced_at       timestamptz
);
CREATE INDEX learned_unsynced ON core.learned_patterns (updated_at) WHERE synced_at IS NULL OR synced_at < updated_at;
COMMENT ON TABLE core.learned_patterns IS 'Patterns this instance learned: totals, confidence (mean of results), first/last seen.';

CREATE TABLE core.agent_knowledge (
    agent_id   text NOT NULL REFERENCES core.agents (id),
    key        text NOT NULL,
    kind       text NOT NULL,
    occurrences bigint NOT NULL,
    confidence numeric NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, key)
);
COMMENT ON TABLE core.agent_knowledge IS 'Per-agent patterns of the last 24 hours (update_agent_knowledge).';

CREATE TABLE core.logs (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    level    text NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warning', 'error')),
    agent_id text,
    message  text NOT NULL,
    detail   jsonb
);
CREATE INDEX logs_at ON core.logs (at);
COMMENT ON TABLE core.logs IS 'Agent and job logs; debug/info kept 7 days, warnings/errors 30 (cleanup_logs).';

CREATE TABLE core.global_knowledge (
    key               text PRIMARY KEY,
    kind              text,
    instances         int,
    total_occurrences bigint,
    confidence        numeric,
    rank              int,
    packages          text[],
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.global_knowledge IS 'Aggregated patterns from CentralCloud (folded in from knowledge_updates).';

CREATE TABLE core.templates (
    path       text PRIMARY KEY,
    hash       text,
    content    text,
    commit     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.templates IS 'Templates distributed by CentralCloud (folded in from template_updates).';

CREATE TABLE core.job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    status      text NOT NULL CHECK (status IN ('ok', 'failed')),
    detail      text
);
CREATE INDEX job_runs_job_time ON core.job_runs (job, started_at DESC);
COMMENT ON TABLE core.job_runs IS 'Every core.run_job() run: what jobs-status shows (service roles cannot read cron.job_run_details).';

CREATE TABLE core.agent_results (
    request_id   text PRIMARY KEY,
    agent_id     text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('llm', 'job', 'approval', 'question')),
    request      jsonb NOT NULL,
    reply_to     text NOT NULL,
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX agent_results_agent ON core.agent_results (agent_id, created_at);
COMMENT ON TABLE core.agent_results IS 'Requests agents sent over the bus and the replies they got (survive a restart).';

CREATE TABLE outbox.messages (
    id              text PRIMARY KEY,                      -- a ULID; also the envelope "id" on the bus
    queue           text NOT NULL,
    message         jsonb NOT NULL CHECK (jsonb_typeof(message) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        int NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    dead            boolean NOT NULL DEFAULT false         -- refused by the bus max_attempts times
);
CREATE INDEX outbox_ready ON outbox.messages (id) WHERE NOT dead;
COMMENT ON TABLE outbox.messages IS 'Written in the business transaction; deleted only after shared_queue committed it.';

CREATE TABLE outbox.drain_runs (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ran_at    timestamptz NOT NULL DEFAULT now(),
    sent      int NOT NULL,
    failed    int NOT NULL,
    error     text,
    duration_ms numeric
);
COMMENT ON TABLE outbox.drain_runs IS 'One row per drain: how many sent, failed and why.';

CREATE TABLE outbox.inbox_seen (
    message_id text PRIMARY KEY,
    queue      text NOT NULL,
    folded_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox.inbox_seen IS 'Inbox message ids already folded in (a redelivered message changes nothing).';
