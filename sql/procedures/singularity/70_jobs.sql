-- The AutonomousWorker interface: run a named job (recorded in core.job_runs), job and queue status.

-- Run job P_NAME now and record it; returns 'ok: <detail>' or 'failed: <reason>' (the job's own
-- changes are rolled back on failure, the record stays). Unknown names raise 22023.
CREATE OR REPLACE FUNCTION core.run_job(p_name text)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t0     timestamptz := clock_timestamp();
    detail text;
    st     text := 'ok';
BEGIN
    IF p_name IS NULL OR p_name NOT IN ('learn_patterns', 'update_knowledge', 'sync_learning', 'assign_tasks',
            'refresh_metrics', 'cleanup_logs', 'archive_tasks', 'drain_outbox', 'consume_inbox', 'heartbeat') THEN
        RAISE EXCEPTION 'unknown job %', coalesce(p_name, 'NULL') USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use one of learn_patterns, update_knowledge, sync_learning, assign_tasks, refresh_metrics, '
                   'cleanup_logs, archive_tasks, drain_outbox, consume_inbox, heartbeat.';
    END IF;
    BEGIN
        detail := CASE p_name
            WHEN 'learn_patterns'   THEN core.learn_patterns_from_analysis() || ' results learned'
            WHEN 'update_knowledge' THEN core.update_agent_knowledge() || ' agent summaries'
            WHEN 'sync_learning'    THEN core.sync_learning_to_centralcloud() || ' patterns synced'
            WHEN 'assign_tasks'     THEN core.assign_pending_tasks() || ' tasks assigned'
            WHEN 'refresh_metrics'  THEN core.refresh_agent_performance() || ' metric rows'
            WHEN 'cleanup_logs'     THEN core.cleanup_logs() || ' log rows deleted'
            WHEN 'archive_tasks'    THEN core.archive_completed_tasks() || ' tasks archived'
            WHEN 'drain_outbox'     THEN outbox.drain()::text
            WHEN 'consume_inbox'    THEN outbox.consume_inbox()::text
            WHEN 'heartbeat'        THEN 'heartbeat ' || core.queue_heartbeat()
        END;
        IF p_name = 'drain_outbox' AND detail::jsonb->>'error' IS NOT NULL THEN
            st := 'failed';
            detail := detail::jsonb->>'error';
        END IF;
    EXCEPTION WHEN others THEN
        st := 'failed';
        detail := SQLERRM;
    END;
    INSERT INTO core.job_runs (job, started_at, finished_at, status, detail)
    VALUES (p_name, t0, clock_timestamp(), st, left(detail, 1000));
    RETURN st || ': ' || detail;
END;
$$;
COMMENT ON FUNCTION core.run_job(text) IS 'Runs a named job now and records it in core.job_runs; pg_cron calls this.';

-- Every scheduled job: schedule, last run (start, status, duration, detail), runs and failures in 24 h.
CREATE OR REPLACE FUNCTION core.jobs_status()
RETURNS TABLE (job text, schedule text, last_start timestamptz, last_status text, last_ms numeric,
               last_detail text, runs_24h bigint, failed_24h bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT j.jobname, j.schedule, l.started_at, l.status,
           round(extract(epoch FROM l.finished_at - l.started_at)::numeric * 1000, 1), l.detail,
           (SELECT count(*) FROM core.job_runs r WHERE r.job = j.jobname AND r.started_at > now() - interval '1 day'),
           (SELECT count(*) FROM core.job_runs r WHERE r.job = j.jobname AND r.started_at > now() - interval '1 day'
                                                   AND r.status = 'failed')
      FROM ops.cron_jobs j
      LEFT JOIN LATERAL (SELECT * FROM core.job_runs r WHERE r.job = j.jobname ORDER BY r.started_at DESC LIMIT 1) l ON true
     ORDER BY j.jobname;
$$;
COMMENT ON FUNCTION core.jobs_status() IS 'Schedules (ops.cron_jobs) with their last run from core.job_runs.';

-- Outbox, tasks and learning backlog at a glance.
CREATE OR REPLACE FUNCTION core.queue_status()
RETURNS TABLE (item text, value text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'outbox ' || queue, count(*) FILTER (WHERE NOT dead) || ' waiting, ' || count(*) FILTER (WHERE dead)
           || ' dead, oldest ' || coalesce(round(extract(epoch FROM now() - min(created_at)))::text, '-') || ' s'
      FROM outbox.messages GROUP BY queue
    UNION ALL
    SELECT 'outbox last error', coalesce((SELECT last_error FROM outbox.messages WHERE last_error IS NOT NULL
                                           ORDER BY last_attempt_at DESC LIMIT 1), '-')
    UNION ALL
    SELECT 'last drain', coalesce((SELECT ran_at::text || ': ' || sent || ' sent, ' || failed || ' failed'
                                          || coalesce(' (' || error || ')', '')
                                     FROM outbox.drain_runs ORDER BY id DESC LIMIT 1), 'never')
    UNION ALL
    SELECT 'tasks ' || status, count(*)::text FROM core.tasks GROUP BY status
    UNION ALL
    SELECT 'analysis results unlearned', count(*)::text FROM core.analysis_results WHERE NOT learned
    UNION ALL
    SELECT 'patterns learned / unsynced', count(*) || ' / ' || count(*) FILTER (WHERE synced_at IS NULL OR synced_at < updated_at)
      FROM core.learned_patterns
    UNION ALL
    -- what agents waited for, end to end (request sent -> reply stored), over the last 24 h
    SELECT 'agent ' || kind || ' requests (24 h)',
           count(completed_at) || ' answered, ' || count(*) FILTER (WHERE completed_at IS NULL) || ' waiting; p50 '
           || coalesce(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at) * 1000))::text, '-')
           || ' ms, p95 '
           || coalesce(round(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at) * 1000))::text, '-')
           || ' ms'
      FROM core.agent_results WHERE created_at > now() - interval '24 hours' GROUP BY kind;
$$;
COMMENT ON FUNCTION core.queue_status() IS
    'Outbox depth and errors, tasks by status, learning backlog, agents'' end-to-end request latency.';
