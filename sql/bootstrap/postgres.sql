-- pg_cron lives in the `postgres` database (cron.database_name); jobs run in other databases
-- through cron.schedule_in_database, as the role each database names in ops.cron_jobs.
CREATE EXTENSION IF NOT EXISTS pg_cron SCHEMA public;   -- its objects are in schema cron; public here is the superuser's
-- ops.report_schedules() pushes the jobs' last runs to shared_queue over dblink each minute.
CREATE EXTENSION IF NOT EXISTS dblink SCHEMA extensions;
-- pg_cron reads its run history by job; without this the report scans two weeks of runs per job.
CREATE INDEX IF NOT EXISTS job_run_details_jobid_start_idx ON cron.job_run_details (jobid, start_time DESC);
