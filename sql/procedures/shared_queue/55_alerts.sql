-- Alerts over the bus (seed 002's "monitoring/alerting for queue depth"): each row says what is
-- wrong and what to do. Thresholds are operator settings (bus.settings), with defaults here.

-- Current alerts: deep or stale queues, dead letters, late heartbeats, failing schedules.
CREATE OR REPLACE FUNCTION bus.alerts()
RETURNS TABLE (severity text, subject text, message text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    max_depth  bigint := coalesce(bus.setting('alert_depth'), '1000')::bigint;
    max_age_s  int := coalesce(bus.setting('alert_oldest_s'), '300')::int;
    late_s     int := coalesce(bus.setting('alert_heartbeat_late_s'), '60')::int;
    gone_s     int := coalesce(bus.setting('alert_heartbeat_gone_s'), '600')::int;
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
    SELECT CASE WHEN h.age_s > gone_s THEN 'critical' ELSE 'warning' END,
           h.service || ':' || h.instance_id,
           format('no heartbeat for %s s (%s)', h.age_s, CASE WHEN h.age_s > gone_s THEN 'gone' ELSE 'late' END),
           'restart its daemon (orchestrator daemon) or remove the instance if it was retired'
      FROM (SELECT DISTINCT ON (1, 2) x.message->>'service' AS service, x.message->>'instance_id' AS instance_id,
                   extract(epoch FROM now() - x.enqueued_at)::int AS age_s,
                   x.message->'stats'->>'state' IS NOT DISTINCT FROM 'stopped' AS stopped
              FROM (SELECT message, enqueued_at FROM pgmq.q_instance_heartbeat
                    UNION ALL
                    SELECT message, enqueued_at FROM pgmq.a_instance_heartbeat
                     WHERE enqueued_at > now() - make_interval(secs => gone_s * 6)) x
             ORDER BY 1, 2, x.enqueued_at DESC) h
     WHERE h.age_s > late_s
       AND NOT h.stopped  -- its last heartbeat said it stopped on purpose (graceful shutdown)
       -- a removed Singularity instance (orchestrator instance remove) is retired, not late
       AND (h.service <> 'singularity' OR EXISTS (SELECT 1 FROM bus.instances i WHERE i.instance_id = h.instance_id))
    UNION ALL
    SELECT * FROM bus._schedule_alerts();
END;
$$;
COMMENT ON FUNCTION bus.alerts() IS 'What needs attention on the bus now, each with the fix; thresholds in bus.settings.';
REVOKE EXECUTE ON FUNCTION bus.alerts() FROM PUBLIC;
