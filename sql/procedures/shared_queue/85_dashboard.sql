-- Read-only figures for the Nexus dashboard (svc_nexus), plus dead-letter replay from the page.
-- SECURITY DEFINER wrappers owned by the shared_queue owner: svc_nexus gets these functions,
-- not the operator functions or the queue tables they read.

CREATE OR REPLACE FUNCTION bus.dashboard_overview()
RETURNS TABLE (queue_name text, kind text, instance_id text, queue_length bigint, visible bigint,
               oldest_age_s int, total_messages bigint, dead_letters bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM bus.queue_overview();
$$;
COMMENT ON FUNCTION bus.dashboard_overview() IS 'bus.queue_overview() for the Nexus dashboard.';

CREATE OR REPLACE FUNCTION bus.dashboard_hourly(p_hours int DEFAULT 24)
RETURNS TABLE (queue_name text, hour timestamptz, messages bigint, p50_latency_ms double precision,
               p95_latency_ms double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT a.queue_name, date_trunc('hour', a.archived_at), count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at) * 1000),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at) * 1000)
      FROM bus.archived_messages a
     WHERE a.archived_at > now() - make_interval(hours => p_hours)
     GROUP BY 1, 2 ORDER BY 2, 1;
END;
$$;
COMMENT ON FUNCTION bus.dashboard_hourly(int) IS 'Archived (= processed) messages per queue and hour with latency percentiles.';

CREATE OR REPLACE FUNCTION bus.dashboard_daily(p_days int DEFAULT 14)
RETURNS TABLE (queue_name text, day timestamptz, messages bigint, p50_latency_ms double precision,
               p95_latency_ms double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT d.queue_name, d.day, sum(d.messages)::bigint, max(d.p50_latency_ms), max(d.p95_latency_ms)
      FROM bus.archive_daily d WHERE d.day > now() - make_interval(days => p_days)
     GROUP BY 1, 2 ORDER BY 2, 1;
END;
$$;
COMMENT ON FUNCTION bus.dashboard_daily(int) IS 'bus.archive_daily per queue over the last days, for the Nexus dashboard.';

CREATE OR REPLACE FUNCTION bus.dashboard_dead_letters(p_limit int DEFAULT 50)
RETURNS TABLE (msg_id bigint, enqueued_at timestamptz, queue text, error text, attempts int)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.msg_id, d.enqueued_at, d.message->>'queue', d.message->>'error', (d.message->>'attempts')::int
      FROM pgmq.q_dead_letters d ORDER BY d.msg_id DESC LIMIT p_limit;
$$;
COMMENT ON FUNCTION bus.dashboard_dead_letters(int) IS 'The latest dead letters (queue, error, attempts) for the Nexus dashboard.';

CREATE OR REPLACE FUNCTION bus.dashboard_dlq_replay(p_dlq_msg_id bigint)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bus.dlq_replay(p_dlq_msg_id);
$$;
COMMENT ON FUNCTION bus.dashboard_dlq_replay(bigint) IS 'Dead-letter replay from the Nexus page (a signed-in person asked for it).';

-- bus.alerts() for the Nexus page, /metrics and the daemon's alert pusher (read-only).
CREATE OR REPLACE FUNCTION bus.dashboard_alerts()
RETURNS TABLE (severity text, subject text, message text, fix text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM bus.alerts();
$$;
COMMENT ON FUNCTION bus.dashboard_alerts() IS 'bus.alerts() for svc_nexus (dashboard, /metrics, alert webhook).';

-- Enqueue-to-archive latency per queue over the last P_MINUTES (for /metrics).
CREATE OR REPLACE FUNCTION bus.dashboard_latency(p_minutes int DEFAULT 60)
RETURNS TABLE (queue_name text, messages bigint, p50_s double precision, p95_s double precision,
               p99_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.queue_name, count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at)),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at)),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at))
      FROM bus.archived_messages a
     WHERE a.archived_at > now() - make_interval(mins => p_minutes)
     GROUP BY 1 ORDER BY 1;
$$;
COMMENT ON FUNCTION bus.dashboard_latency(int) IS 'Enqueue-to-archive latency percentiles per queue over the last minutes.';

-- Every pg_cron job with its last run (reported each minute from the postgres database).
CREATE OR REPLACE FUNCTION bus.dashboard_schedules()
RETURNS TABLE (jobname text, schedule text, database text, active boolean, last_status text,
               last_start timestamptz, last_end timestamptz, last_message text, runs_24h int, failures_24h int,
               reported_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.jobname, s.schedule, s.database, s.active, s.last_status, s.last_start, s.last_end, s.last_message,
           s.runs_24h, s.failures_24h, s.reported_at
      FROM bus.schedule_runs s ORDER BY s.jobname;
$$;
COMMENT ON FUNCTION bus.dashboard_schedules() IS 'pg_cron jobs and their last runs for the Nexus dashboard and /metrics.';

REVOKE EXECUTE ON FUNCTION bus.dashboard_overview(), bus.dashboard_hourly(int), bus.dashboard_daily(int),
    bus.dashboard_dead_letters(int), bus.dashboard_dlq_replay(bigint), bus.dashboard_alerts(),
    bus.dashboard_latency(int), bus.dashboard_schedules() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bus.dashboard_overview(), bus.dashboard_hourly(int), bus.dashboard_daily(int),
    bus.dashboard_dead_letters(int), bus.dashboard_dlq_replay(bigint), bus.dashboard_alerts(),
    bus.dashboard_latency(int), bus.dashboard_schedules() TO svc_nexus;
