-- Genesis: every code execution (keyed by the request id, so a redelivered request is answered from
-- here instead of running again) and the operator's resource limits. Functions live in
-- sql/procedures/genesis/ (re-applied on every migrate).
CREATE SCHEMA IF NOT EXISTS genesis;
COMMENT ON SCHEMA genesis IS 'Sandboxed code executions and their resource limits.';

CREATE TABLE genesis.limits (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,40}$'),
    default_value numeric NOT NULL CHECK (default_value > 0),
    max_value     numeric NOT NULL CHECK (max_value > 0),
    unit          text NOT NULL DEFAULT '',
    description   text NOT NULL DEFAULT '',
    CHECK (default_value <= max_value)
);
COMMENT ON TABLE genesis.limits IS 'Per-job limits: the default, and the operator maximum a request may lower but never raise.';

INSERT INTO genesis.limits (name, default_value, max_value, unit, description) VALUES
    ('timeout_s',    10,  120, 's',  'wall-clock time; the whole process tree is killed at the deadline'),
    ('cpu_s',        10,  120, 's',  'CPU seconds per process (RLIMIT_CPU)'),
    ('memory_mb',    256, 2048, 'MB', 'address space per process (RLIMIT_AS; node gets +1024 MB of V8 reservations)'),
    ('processes',    64,  512, '',   'processes and threads of the sandbox uid (RLIMIT_NPROC)'),
    ('file_size_mb', 16,  256, 'MB', 'largest file a process may write (RLIMIT_FSIZE)'),
    ('tmpfs_mb',     64,  512, 'MB', 'size of the private tmpfs working directory /work'),
    ('open_files',   64,  1024, '',  'open file descriptors per process (RLIMIT_NOFILE)'),
    ('output_kb',    64,  1024, 'KB', 'stdout and stderr each; beyond it the job is stopped and the output truncated');

CREATE TABLE genesis.executions (
    request_id     text PRIMARY KEY,
    agent_id       text,
    language       text NOT NULL,
    mode           text NOT NULL,
    code_sha256    text NOT NULL,
    limits         jsonb NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
    runs           int NOT NULL DEFAULT 1 CHECK (runs >= 1),   -- >1 only after a worker died mid-run
    worker         text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    lease_until    timestamptz NOT NULL,                       -- a running row past this is a crashed worker's
    finished_at    timestamptz,
    exit_code      int,
    stdout         text,
    stderr         text,
    error          text,
    killed_reason  text CHECK (killed_reason IN ('timeout', 'resource_exceeded')),
    exceeded       text,
    truncated      boolean NOT NULL DEFAULT false,
    duration_ms    numeric,
    peak_memory_kb bigint,
    result         jsonb,                                      -- the job_results message, replayed on redelivery
    CHECK ((status = 'finished') = (finished_at IS NOT NULL AND result IS NOT NULL))
);
CREATE INDEX executions_started ON genesis.executions (started_at DESC);
COMMENT ON TABLE genesis.executions IS 'One row per job request id; finished rows are answered from result, never re-run.';
