-- pg_cron schedules (seed 003's intervals), synced by `orchestrator migrate` as `<db>:<job>` and run
-- as this database's service role. Every job goes through core.run_job, which records the run, but the
-- drain: a procedure that commits per batch cannot be SECURITY DEFINER, so it runs as the owner
-- (current_user here: procedures are applied by the owner) and the service role gets none of its parts.
DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('learn_patterns', 'sync_learning', 'update_knowledge',
    'assign_tasks', 'refresh_metrics', 'cleanup_logs', 'archive_tasks', 'drain_outbox', 'consume_inbox', 'heartbeat');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('learn_patterns',   '*/5 * * * *',  $$SELECT core.run_job('learn_patterns')$$,   NULL, 'learn from analysis results (5 min)'),
    ('sync_learning',    '*/10 * * * *', $$SELECT core.run_job('sync_learning')$$,    NULL, 'totals to CentralCloud (10 min)'),
    ('update_knowledge', '7 * * * *',    $$SELECT core.run_job('update_knowledge')$$, NULL, 'per-agent knowledge (1 h)'),
    ('assign_tasks',     '*/2 * * * *',  $$SELECT core.run_job('assign_tasks')$$,     NULL, 'assign pending tasks (2 min)'),
    ('refresh_metrics',  '*/30 * * * *', $$SELECT core.run_job('refresh_metrics')$$,  NULL, 'agent_performance_5min (30 min)'),
    ('cleanup_logs',     '13 */6 * * *', $$SELECT core.run_job('cleanup_logs')$$,     NULL, 'old logs and job runs (6 h)'),
    ('archive_tasks',    '43 2 * * *',   $$SELECT core.run_job('archive_tasks')$$,    NULL, 'archive finished tasks (24 h)'),
    ('drain_outbox',     '* * * * *',    $$CALL outbox.drain_all()$$,                current_user, 'outbox -> shared_queue, commit per batch (1 min)'),
    ('consume_inbox',    '* * * * *',    $$SELECT core.run_job('consume_inbox')$$,    NULL, 'knowledge/templates inbox (1 min)'),
    ('heartbeat',        '* * * * *',    $$SELECT core.run_job('heartbeat')$$,        NULL, 'instance_heartbeat via the outbox (1 min)')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
