-- Alerts over the bus (seed 002's "monitoring/alerting for queue depth"): each row says what is
-- wrong and what to do. Thresholds are operator settings (bus.settings), with defaults here.

-- Liveness of every service and instance that sent a heartbeat: the one place it is decided (the
-- alerts, `orchestrator status`, the dashboard and CentralCloud's registry all use these thresholds:
-- bus.settings alert_heartbeat_late_s, alert_heartbeat_gone_s). A heartbeat's time is the bus's
-- (enqueued_at), never the sender's clock; a last beat saying "stopped" is a graceful shutdown.
CREATE OR REPLACE FUNCTION bus.heartbeat_status()
RETURNS TABLE (service text, instance_id text, last_seen timestamptz, age_s int, status text, stopped boolean,
               stats jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- plpgsql: the queue tables it reads are created after this file on a fresh install (80_queues.sql)
    RETURN QUERY
    WITH t AS (SELECT coalesce(bus.setting('alert_heartbeat_late_s'), '180')::int AS late_s,
                      coalesce(bus.setting('alert_heartbeat_gone_s'), '600')::int AS gone_s),
         h AS (SELECT DISTINCT ON (1, 2) x.message->>'service' AS service, x.message->>'instance_id' AS instance_id,
                      x.enqueued_at, x.message->'stats' AS stats
                 FROM (SELECT q.message, q.enqueued_at FROM pgmq.q_instance_heartbeat q
                       UNION ALL
                       SELECT a.message, a.enqueued_at FROM pgmq.a_instance_heartbeat a, t
                        WHERE a.enqueued_at > now() - make_interval(secs => t.gone_s * 6)) x
                ORDER BY 1, 2, x.enqueued_at DESC)
    SELECT h.service, h.instance_id, h.enqueued_at, extract(epoch FROM now() - h.enqueued_at)::int,
           CASE WHEN h.stats->>'state' IS NOT DISTINCT FROM 'stopped' THEN 'stopped'
                WHEN now() - h.enqueued_at <= make_interval(secs => t.late_s) THEN 'healthy'
                WHEN now() - h.enqueued_at <= make_interval(secs => t.gone_s) THEN 'late'
                ELSE 'gone' END,
           h.stats->>'state' IS NOT DISTINCT FROM 'stopped', h.stats
      FROM h, t
     ORDER BY 1, 2;
END;
$$;
COMMENT ON FUNCTION bus.heartbeat_status() IS
    'Every service/instance seen in instance_heartbeat: last seen (bus time) and healthy / late / gone / stopped.';
REVOKE EXECUTE ON FUNCTION bus.heartbeat_status() FROM PUBLIC;

-- Current alerts: deep or stale queues, dead letters, late heartbeats, failing schedules, cold storage behind.
CREATE OR REPLACE FUNCTION bus.alerts()
RETURNS TABLE (severity text, subject text, message text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    max_depth  bigint := coalesce(bus.setting('alert_depth'), '1000')::bigint;
    max_age_s  int := coalesce(bus.setting('alert_oldest_s'), '300')::int;
BEGIN
    RETURN QUERY
    SELECT 'warning', o.queue_name,
           format('%s messages waiting (%s visible), over the alert depth of %s', o.queue_length, o.visible, max_depth),
           format('start more consumers of %s (orchestrator daemon) or find why they are slow', o.queue_name)
      FROM bus.queue_overview() o
     WHERE o.kind <> 'dead_letters' AND o.visible > max_depth
    UNION ALL
    SELECT 'warning', o.queue_name,
           format('oldest message has waited %s s (alert after %s s)', o.oldest_age_s, max_age_s),
           format('is the consumer of %s running? orchestrator status shows heartbeats', o.queue_name)
      FROM bus.queue_overview() o
     WHERE o.kind NOT IN ('dead_letters', 'instance_heartbeat') AND o.visible > 0 AND o.oldest_age_s > max_age_s
    UNION ALL
    SELECT 'warning', 'dead_letters',
           format('%s dead letters from %s', sum(o.dead_letters), string_agg(o.queue_name, ', ')),
           'orchestrator dlq list; fix the cause, then orchestrator dlq replay ID (or --all)'
      FROM bus.queue_overview() o
     WHERE o.dead_letters > 0
    HAVING sum(o.dead_letters) > 0
    UNION ALL
    SELECT CASE WHEN h.status = 'gone' THEN 'critical' ELSE 'warning' END,
           h.service || ':' || h.instance_id,
           format('no heartbeat for %s s (%s)', h.age_s, h.status),
           'restart its daemon (orchestrator daemon) or remove the instance if it was retired'
      FROM bus.heartbeat_status() h
     WHERE h.status IN ('late', 'gone')
       -- a removed Singularity instance (orchestrator instance remove) is retired, not late
       AND (h.service <> 'singularity' OR EXISTS (SELECT 1 FROM bus.instances i WHERE i.instance_id = h.instance_id))
    UNION ALL
    SELECT * FROM bus._schedule_alerts()
    UNION ALL
    SELECT * FROM bus._cold_alerts();
END;
$$;
COMMENT ON FUNCTION bus.alerts() IS 'What needs attention on the bus now, each with the fix; thresholds in bus.settings.';
REVOKE EXECUTE ON FUNCTION bus.alerts() FROM PUBLIC;
