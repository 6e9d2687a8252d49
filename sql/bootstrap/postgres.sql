-- pg_cron lives in the `postgres` database (cron.database_name); jobs run in other databases
-- through cron.schedule_in_database, as the role each database names in ops.cron_jobs.
CREATE EXTENSION IF NOT EXISTS pg_cron;
