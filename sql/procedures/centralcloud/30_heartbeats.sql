-- Instance registry from instance_heartbeat: last seen per (instance, service) and a status
-- (healthy / late / gone) from the thresholds in centralcloud.settings. Idempotent without a
-- ledger: last_seen only moves forward (the bus's enqueued_at, so senders' clocks do not matter).

-- Status of something last seen at P_LAST_SEEN, as of P_NOW.
CREATE OR REPLACE FUNCTION centralcloud.heartbeat_status(p_last_seen timestamptz, p_now timestamptz DEFAULT now())
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_now - p_last_seen <= make_interval(secs => centralcloud.setting('heartbeat_late_s', '60')::int) THEN 'healthy'
                WHEN p_now - p_last_seen <= make_interval(secs => centralcloud.setting('heartbeat_gone_s', '600')::int) THEN 'late'
                ELSE 'gone' END
$$;

CREATE OR REPLACE VIEW centralcloud.instance_status AS
SELECT instance_id, service, centralcloud.heartbeat_status(last_seen) AS status, last_seen,
       round(extract(epoch FROM now() - last_seen)::numeric, 1) AS age_s, first_seen, stats
  FROM centralcloud.instances;
COMMENT ON VIEW centralcloud.instance_status IS 'Every instance/service seen: healthy, late or gone by its last heartbeat.';

-- Fold the heartbeats in centralcloud._batch_heartbeats into centralcloud.instances; returns rows changed.
CREATE OR REPLACE FUNCTION centralcloud._fold_heartbeats()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    INSERT INTO centralcloud.instances AS i (instance_id, service, first_seen, last_seen, stats)
    SELECT message->>'instance_id', message->>'service', min(enqueued_at), max(enqueued_at),
           (array_agg(CASE WHEN jsonb_typeof(message->'stats') = 'object' THEN message->'stats' END ORDER BY enqueued_at DESC))[1]
      FROM centralcloud._batch_heartbeats
     WHERE coalesce(message->>'instance_id', '') <> '' AND coalesce(message->>'service', '') <> ''
     GROUP BY 1, 2
    ON CONFLICT (instance_id, service) DO UPDATE
       SET first_seen = least(i.first_seen, EXCLUDED.first_seen),
           last_seen = greatest(i.last_seen, EXCLUDED.last_seen),
           stats = CASE WHEN EXCLUDED.last_seen >= i.last_seen THEN EXCLUDED.stats ELSE i.stats END
     WHERE EXCLUDED.last_seen > i.last_seen OR EXCLUDED.first_seen < i.first_seen;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- The liveness thresholds are the bus's (bus.settings alert_heartbeat_late_s / _gone_s, used by
-- bus.heartbeat_status and the alerts): each heartbeats run copies them here, so the registry and the
-- alerts never disagree on who is late.
CREATE OR REPLACE FUNCTION centralcloud._set_heartbeat_thresholds(p_late_s int, p_gone_s int)
RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO centralcloud.settings (key, value)
    SELECT k, v::text FROM (VALUES ('heartbeat_late_s', p_late_s), ('heartbeat_gone_s', p_gone_s)) AS x(k, v)
     WHERE v IS NOT NULL AND v > 0
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = pg_catalog.now()
     WHERE centralcloud.settings.value IS DISTINCT FROM EXCLUDED.value;
$$;
REVOKE EXECUTE ON FUNCTION centralcloud._set_heartbeat_thresholds(int, int) FROM PUBLIC;

CREATE OR REPLACE FUNCTION centralcloud._sync_heartbeat_thresholds()
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT centralcloud._set_heartbeat_thresholds(t.late_s, t.gone_s)
      FROM extensions.dblink(centralcloud._bus(),
               $q$SELECT (SELECT value FROM bus.settings WHERE key = 'alert_heartbeat_late_s')::int,
                         (SELECT value FROM bus.settings WHERE key = 'alert_heartbeat_gone_s')::int$q$)
           AS t(late_s int, gone_s int);
$$;

-- Job `heartbeats` (every minute): drain instance_heartbeat into the registry.
CREATE OR REPLACE PROCEDURE centralcloud.job_heartbeats(INOUT result text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := clock_timestamp();
    n int;
    msgs bigint := 0;
    changed bigint := 0;
    last_id bigint := 0;
BEGIN
    IF ops.bus_off() IS NOT NULL THEN   -- SHARED_QUEUE_ENABLED=false: wait, and say so
        result := centralcloud._log_run('heartbeats', started, true, ops.bus_off());
        COMMIT;
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(hashtext('centralcloud:heartbeats')) THEN
        result := 'skipped: heartbeats is already running';
        RETURN;
    END IF;
    PERFORM centralcloud._sync_heartbeat_thresholds();
    LOOP
        n := centralcloud._read_batch('instance_heartbeat', centralcloud.setting('batch_size', '20000')::int,
                                      '_batch_heartbeats', last_id);
        EXIT WHEN n = 0;
        last_id := (SELECT max(msg_id) FROM centralcloud._batch_heartbeats);
        msgs := msgs + n;
        changed := changed + centralcloud._fold_heartbeats();
        COMMIT;
        PERFORM centralcloud._ack_batch('_batch_heartbeats');
        COMMIT;
    END LOOP;
    result := centralcloud._log_run('heartbeats', started, true, format('%s heartbeats, %s registry rows changed; %s',
        msgs, changed, (SELECT coalesce(string_agg(format('%s %s', c, status), ', ' ORDER BY status), 'no instances yet')
                          FROM (SELECT status, count(*) AS c FROM centralcloud.instance_status GROUP BY 1) x)));
    PERFORM centralcloud._bus_close();
    PERFORM pg_catalog.pg_advisory_unlock(hashtext('centralcloud:heartbeats'));
    COMMIT;
END;
$$;
COMMENT ON PROCEDURE centralcloud.job_heartbeats(text) IS 'Every minute: keep the instance registry current from instance_heartbeat.';
