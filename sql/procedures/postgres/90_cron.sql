-- pg_cron never cleans cron.job_run_details: keep two weeks of history.
DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('prune_cron_history');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('prune_cron_history', '23 3 * * *',
     $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '14 days'$$, 'postgres',
     'pg_cron keeps every run forever otherwise')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
