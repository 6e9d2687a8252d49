-- depends: 0009_cold_storage
-- The operator console (issue 16): each job's last runs (not only the last one) as reported by pg_cron,
-- and "run now" requests made on the Nexus page, which postgres:report_schedules turns into a one-off
-- pg_cron job of the same command, database and user (the page's role never touches pg_cron).
ALTER TABLE bus.schedule_runs ADD COLUMN recent jsonb NOT NULL DEFAULT '[]'::jsonb;
COMMENT ON COLUMN bus.schedule_runs.recent IS 'The last finished runs: [{start, end, status, message}], newest first.';

CREATE TABLE bus.schedule_run_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jobname      text NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    taken_at     timestamptz            -- when postgres:report_schedules scheduled the one-off run
);
COMMENT ON TABLE bus.schedule_run_requests IS
    'Run-now requests from the Nexus page (bus.console_schedule_run_now), taken by postgres:report_schedules.';
REVOKE ALL ON bus.schedule_run_requests FROM PUBLIC;
