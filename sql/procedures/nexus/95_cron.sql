-- pg_cron schedules wanted by nexus (synced into pg_cron by orchestrator migrate, run as svc_nexus).
DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('release_reservations');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('release_reservations', '*/10 * * * *', 'SELECT nexus.release_stale_reservations()', NULL,
     'give back budget reservations of requests never settled; drop expired sessions')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
