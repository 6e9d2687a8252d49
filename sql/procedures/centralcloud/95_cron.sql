-- pg_cron schedules wanted by centralcloud (synced into pg_cron by orchestrator migrate as
-- `centralcloud:<job>`, run as svc_centralcloud). The Git jobs (knowledge-export 01:00 UTC daily,
-- template-distribution every 4 h) run in the daemon's centralcloud worker instead.
DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('aggregate', 'statistics', 'package_sync', 'pattern_sync', 'heartbeats');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('aggregate',    '0 * * * *',  'CALL centralcloud.job_aggregate(NULL)', NULL,
     'consume pattern_messages and learned_patterns from every instance; aggregate and rank'),
    ('statistics',   '5 * * * *',  'CALL centralcloud.job_statistics(NULL)', NULL,
     'statistics from the shared_queue archives (read-only)'),
    ('pattern_sync', '10 * * * *', 'CALL centralcloud.job_pattern_sync(NULL)', NULL,
     'publish aggregated_patterns to every instance (after aggregate)'),
    ('package_sync', '20 2 * * *', 'CALL centralcloud.job_package_sync(NULL)', NULL,
     'catalogue of packages and frameworks reported in patterns'),
    ('heartbeats',   '* * * * *',  'CALL centralcloud.job_heartbeats(NULL)', NULL,
     'instance registry from instance_heartbeat')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
