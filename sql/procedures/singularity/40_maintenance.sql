-- Metrics, log cleanup, task archiving, heartbeat.

CREATE MATERIALIZED VIEW IF NOT EXISTS core.agent_performance_5min AS
SELECT date_bin('5 minutes', completed_at, timestamptz '2000-01-01 00:00:00+00') AS bucket,
       assigned_agent AS agent_id,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       round(avg(extract(epoch FROM completed_at - assigned_at))::numeric, 3) AS avg_seconds
  FROM (SELECT status, assigned_agent, assigned_at, completed_at FROM core.tasks
         WHERE status IN ('completed', 'failed')
        UNION ALL
        SELECT status, assigned_agent, assigned_at, completed_at FROM core.tasks_archive) t
 WHERE completed_at > now() - interval '7 days' AND assigned_agent IS NOT NULL
 GROUP BY 1, 2
WITH NO DATA;
CREATE UNIQUE INDEX IF NOT EXISTS agent_performance_5min_key ON core.agent_performance_5min (bucket, agent_id);
COMMENT ON MATERIALIZED VIEW core.agent_performance_5min IS
    'Tasks finished per agent per 5-minute bucket (date_bin) over 7 days; refreshed by refresh_metrics.';

-- Refresh agent_performance_5min (concurrently once populated, so readers never block). Returns its rows.
CREATE OR REPLACE FUNCTION core.refresh_agent_performance()
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF (SELECT relispopulated FROM pg_class WHERE oid = 'core.agent_performance_5min'::regclass) THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY core.agent_performance_5min;
    ELSE
        REFRESH MATERIALIZED VIEW core.agent_performance_5min;
    END IF;
    SELECT count(*) INTO n FROM core.agent_performance_5min;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.refresh_agent_performance() IS 'Refreshes core.agent_performance_5min; returns its row count.';

-- Delete debug/info logs older than P_KEEP, warnings/errors older than P_KEEP_ERRORS, and
-- job_runs older than 14 days. Returns the log rows deleted. The service role may call it but may not
-- delete logs itself: a keep shorter than ops.settings cleanup_logs_min_keep (the owner's to change)
-- is refused (22023, with the fix), not clamped.
INSERT INTO ops.settings (key, value, comment) VALUES
    ('cleanup_logs_min_keep', '1 day', 'core.cleanup_logs refuses to keep logs for less')
ON CONFLICT (key) DO NOTHING;

CREATE OR REPLACE FUNCTION core.cleanup_logs(p_keep interval DEFAULT '7 days', p_keep_errors interval DEFAULT '30 days')
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    min_keep interval := coalesce((SELECT s.value::interval FROM ops.settings s WHERE s.key = 'cleanup_logs_min_keep'),
                                  '1 day');
    n bigint;
BEGIN
    IF p_keep IS NULL OR p_keep_errors IS NULL OR least(p_keep, p_keep_errors) < min_keep THEN
        PERFORM ops.refuse_below_minimum('core.cleanup_logs', 'keeping ' || coalesce(least(p_keep, p_keep_errors)::text, 'NULL'),
                                         min_keep::text, 'cleanup_logs_min_keep', format('Keep logs at least %s.', min_keep));
    END IF;
    DELETE FROM core.logs l
     WHERE (l.level IN ('debug', 'info') AND l.at < now() - p_keep)
        OR (l.level IN ('warning', 'error') AND l.at < now() - p_keep_errors);
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM core.job_runs r WHERE r.started_at < now() - interval '14 days';
    DELETE FROM outbox.drain_runs r WHERE r.ran_at < now() - interval '14 days';
    DELETE FROM outbox.inbox_seen r WHERE r.folded_at < now() - interval '30 days';
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.cleanup_logs(interval, interval) IS
    'Deletes old logs (info 7 days, errors 30 days by default), old job runs and drain runs.';

-- Move completed/failed tasks finished more than P_AGE ago into core.tasks_archive. Returns how many.
-- An age under ops.settings archive_tasks_min_age (the owner's to change) is refused (22023).
INSERT INTO ops.settings (key, value, comment) VALUES
    ('archive_tasks_min_age', '1 day', 'core.archive_completed_tasks refuses to move younger tasks')
ON CONFLICT (key) DO NOTHING;

CREATE OR REPLACE FUNCTION core.archive_completed_tasks(p_age interval DEFAULT '7 days')
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    min_age interval := coalesce((SELECT s.value::interval FROM ops.settings s WHERE s.key = 'archive_tasks_min_age'),
                                 '1 day');
    n bigint;
BEGIN
    IF p_age IS NULL OR p_age < min_age THEN
        PERFORM ops.refuse_below_minimum('core.archive_completed_tasks', p_age::text, min_age::text, 'archive_tasks_min_age',
                                         format('Archive tasks finished at least %s ago.', min_age));
    END IF;
    WITH moved AS (
        DELETE FROM core.tasks t WHERE t.status IN ('completed', 'failed') AND t.completed_at < now() - p_age
        RETURNING t.*
    )
    INSERT INTO core.tasks_archive (id, kind, payload, priority, status, assigned_agent, assigned_at, completed_at,
                                    result, created_at)
    SELECT m.id, m.kind, m.payload, m.priority, m.status, m.assigned_agent, m.assigned_at, m.completed_at, m.result,
           m.created_at FROM moved m
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.archive_completed_tasks(interval) IS 'Moves old completed/failed tasks to core.tasks_archive.';

-- Queue a heartbeat (instance_heartbeat) so CentralCloud sees the instance alive with no Python running.
CREATE OR REPLACE FUNCTION core.queue_heartbeat()
RETURNS text LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO outbox.messages (queue, message)
    SELECT 'instance_heartbeat',
           jsonb_build_object('type', 'heartbeat', 'instance_id', core.instance_id(), 'service', 'singularity',
                              'at', core._iso(now()),
                              'stats', jsonb_build_object(
                                  'agents', (SELECT count(*) FROM core.agents),
                                  'pending_tasks', (SELECT count(*) FROM core.tasks WHERE status = 'pending'),
                                  'outbox', (SELECT count(*) FROM outbox.messages),
                                  'learned_patterns', (SELECT count(*) FROM core.learned_patterns)))
    RETURNING id;
$$;
COMMENT ON FUNCTION core.queue_heartbeat() IS 'Queues an instance_heartbeat message; returns its id.';
