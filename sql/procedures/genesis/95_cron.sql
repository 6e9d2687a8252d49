-- pg_cron schedules wanted by genesis (synced into pg_cron by orchestrator migrate, run as svc_genesis).
DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('prune_executions');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('prune_executions', '17 3 * * *', 'SELECT genesis.prune_executions(30)', NULL,
     'delete finished executions older than 30 days')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
