-- CentralCloud: cross-instance learning (aggregated and ranked patterns, package catalogue),
-- statistics from the shared_queue archives, the instance registry, templates and the export log.
-- Functions and jobs that use these tables live in sql/procedures/centralcloud/.
CREATE SCHEMA IF NOT EXISTS centralcloud;
COMMENT ON SCHEMA centralcloud IS 'Aggregated learning, archive statistics, instance registry, templates, exports.';

CREATE TABLE centralcloud.settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.settings IS 'Job settings (batch sizes, heartbeat thresholds, watermarks).';

-- Ledger of every bus message consumed: a re-delivered message (crash between the local commit
-- and the remote ack) is found here and dropped.
CREATE TABLE centralcloud.received (
    queue_name  text NOT NULL,
    msg_id      bigint NOT NULL,
    msg_type    text,
    instance_id text,
    enqueued_at timestamptz,
    items       int NOT NULL DEFAULT 0,       -- pattern objects folded in
    rejected    int NOT NULL DEFAULT 0,       -- pattern objects refused (no key, bad numbers)
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, msg_id)
);
COMMENT ON TABLE centralcloud.received IS 'Every consumed bus message by (queue, msg_id): re-deliveries are idempotent.';

-- Per instance and pattern key: occurrences (pattern_detection deltas summed; a learned_patterns
-- total replaces it, and only deltas enqueued after that total add to it).
CREATE TABLE centralcloud.instance_patterns (
    instance_id text NOT NULL,
    key         text NOT NULL,
    kind        text,
    occurrences bigint NOT NULL DEFAULT 0,
    confidence  numeric,
    first_seen  timestamptz,
    last_seen   timestamptz,
    packages    text[] NOT NULL DEFAULT '{}',
    total_at    timestamptz,                  -- enqueued_at of the latest total folded in
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, key)
);
COMMENT ON TABLE centralcloud.instance_patterns IS 'Each instance''s view of each pattern (before aggregation).';

CREATE TABLE centralcloud.patterns (
    key               text PRIMARY KEY,
    kind              text,
    instances         int NOT NULL,
    total_occurrences bigint NOT NULL,
    confidence        numeric NOT NULL,
    rank              int NOT NULL,
    packages          text[] NOT NULL DEFAULT '{}',
    first_seen        timestamptz,
    last_seen         timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.patterns IS 'Aggregated patterns over every instance, ranked (1 = most widely seen).';

CREATE TABLE centralcloud.packages (
    package     text PRIMARY KEY,
    patterns    int NOT NULL,
    instances   int NOT NULL,
    occurrences bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.packages IS 'Catalogue of packages and frameworks instances report in their patterns, with usage counts.';

-- What was last published to each instance inbox, so that pattern sync sends only changes.
CREATE TABLE centralcloud.pattern_syncs (
    queue_name text PRIMARY KEY,
    digest     text NOT NULL,
    patterns   int NOT NULL,
    messages   int NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.pattern_syncs IS 'Digest of the aggregated patterns last sent to each knowledge_updates queue.';

CREATE TABLE centralcloud.instances (
    instance_id text NOT NULL,
    service     text NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    stats       jsonb,
    PRIMARY KEY (instance_id, service)
);
COMMENT ON TABLE centralcloud.instances IS 'Instance registry fed by instance_heartbeat (status in centralcloud.instance_status).';

-- Statistics from the shared_queue archives. bucket 'hour' or 'day' (UTC), by archived_at.
CREATE TABLE centralcloud.stats_latency (
    bucket       text NOT NULL CHECK (bucket IN ('hour', 'day')),
    bucket_start timestamptz NOT NULL,
    queue_name   text NOT NULL,
    msg_type     text NOT NULL,
    messages     bigint NOT NULL,
    p50_ms       double precision,
    p95_ms       double precision,
    max_read_ct  int,
    PRIMARY KEY (bucket, bucket_start, queue_name, msg_type)
);
COMMENT ON TABLE centralcloud.stats_latency IS 'Archived messages per queue/type per hour and day, enqueue-to-archive latency percentiles.';

CREATE TABLE centralcloud.stats_approvals (
    day       date PRIMARY KEY,
    decisions bigint NOT NULL,
    approved  bigint NOT NULL
);
COMMENT ON TABLE centralcloud.stats_approvals IS 'Approval decisions per day (approval_response archives).';

CREATE TABLE centralcloud.stats_questions (
    day       date NOT NULL,
    agent_id  text NOT NULL,
    questions bigint NOT NULL,
    PRIMARY KEY (day, agent_id)
);
COMMENT ON TABLE centralcloud.stats_questions IS 'Questions asked per agent per day (question_request archives).';

CREATE TABLE centralcloud.stats_llm (
    day               date NOT NULL,
    model             text NOT NULL,
    calls             bigint NOT NULL,
    errors            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost              numeric NOT NULL,
    PRIMARY KEY (day, model)
);
COMMENT ON TABLE centralcloud.stats_llm IS 'LLM calls, tokens and cost per day and model (llm_result archives).';

CREATE TABLE centralcloud.templates (
    path       text PRIMARY KEY,
    version    int NOT NULL DEFAULT 1,
    hash       text,                          -- sha256 of the content; NULL once deleted
    commit     text NOT NULL,
    deleted    boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.templates IS 'Templates distributed to instances: version, content hash, Git commit.';

CREATE TABLE centralcloud.template_distributions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    git_url       text NOT NULL,
    commit        text NOT NULL,
    previous      text,
    files         text[] NOT NULL,
    queues        int NOT NULL,
    messages      int NOT NULL,
    distributed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.template_distributions IS 'Each template distribution: commit, the previous one, the files sent.';

CREATE TABLE centralcloud.exports (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo            text NOT NULL,
    branch          text NOT NULL,
    commit          text NOT NULL,
    artifacts_count int NOT NULL,
    files           text[] NOT NULL,
    pushed          boolean NOT NULL DEFAULT false,
    pr_url          text,
    exported_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE centralcloud.exports IS 'Knowledge exports to Git: branch, commit, artifacts, pull request.';

CREATE TABLE centralcloud.job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ok          boolean NOT NULL,
    result      text NOT NULL
);
CREATE INDEX ON centralcloud.job_runs (job, id DESC);
COMMENT ON TABLE centralcloud.job_runs IS 'Every job run (pg_cron or `orchestrator centralcloud run`) and its outcome.';

-- Staging for the job in progress (each job holds an advisory lock, so one writer per table):
-- a batch leased from shared_queue, the new ledger entries of that batch, the pattern objects.
-- UNLOGGED: rebuilt from shared_queue after a crash (the batch is still unacked there).
CREATE UNLOGGED TABLE centralcloud._batch_patterns (queue_name text, msg_id bigint, read_ct int,
    enqueued_at timestamptz, message jsonb);
CREATE UNLOGGED TABLE centralcloud._batch_heartbeats (LIKE centralcloud._batch_patterns);
CREATE UNLOGGED TABLE centralcloud._fresh (queue_name text, msg_id bigint);
CREATE UNLOGGED TABLE centralcloud._items (instance_id text, key text, kind text, occ bigint, mode text,
    confidence numeric, first_seen timestamptz, last_seen timestamptz, packages text[], at timestamptz,
    valid boolean, queue_name text, msg_id bigint);
COMMENT ON TABLE centralcloud._batch_patterns IS 'Staging: the pattern message batch being folded.';
