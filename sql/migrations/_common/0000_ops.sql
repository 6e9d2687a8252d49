-- Applied to every database first: the `ops` schema every database shares in shape.
-- ops.cron_jobs lists the pg_cron schedules this database wants; `orchestrator migrate`
-- upserts them into pg_cron (cron.schedule_in_database), so re-applying is always safe.
CREATE SCHEMA IF NOT EXISTS ops;
COMMENT ON SCHEMA ops IS 'Operational plumbing shared by every database: schedules wanted, ids.';

CREATE TABLE ops.cron_jobs (
    jobname   text PRIMARY KEY CHECK (jobname ~ '^[a-z][a-z0-9_]{1,40}$'),
    schedule  text NOT NULL,
    command   text NOT NULL,
    run_as    name,             -- NULL: the database's service role
    comment   text
);
COMMENT ON TABLE ops.cron_jobs IS 'Desired pg_cron jobs of this database; synced to pg_cron by orchestrator migrate.';
