-- depends: 0001_bus_catalog
-- The pg_cron schedules of every database as last reported from the `postgres` database (where
-- pg_cron keeps its tables, which no service role may read): what the Nexus dashboard, /metrics and
-- bus.alerts() show about schedules. Written only by bus._report_schedules().
CREATE TABLE bus.schedule_runs (
    jobname       text PRIMARY KEY,
    schedule      text NOT NULL,
    database      text NOT NULL,
    active        boolean NOT NULL,
    last_status   text,           -- of the last finished run: succeeded or failed; NULL: never finished
    last_start    timestamptz,
    last_end      timestamptz,
    last_message  text,
    runs_24h      integer NOT NULL DEFAULT 0,
    failures_24h  integer NOT NULL DEFAULT 0,
    reported_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bus.schedule_runs IS
    'Every pg_cron job with its last run, as pushed each minute by postgres:report_schedules.';
REVOKE ALL ON bus.schedule_runs FROM PUBLIC;
