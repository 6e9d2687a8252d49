-- pg_cron schedules wanted by shared_queue (synced into pg_cron by orchestrator migrate).
DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('prune_archives', 'partman_maintenance');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('prune_archives', '17 * * * *', 'CALL bus.prune_archives()', 'own_shared_queue',
     'delete archive rows older than SHARED_QUEUE_RETENTION_DAYS, in batches'),
    ('partman_maintenance', '7 * * * *', 'SELECT partman.run_maintenance(p_analyze := false)', 'own_shared_queue',
     'premake the partitions of partitioned queues (retention is prune_archives'' job, after cold storage)')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
