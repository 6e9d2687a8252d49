-- svc_centralcloud runs the jobs (pg_cron and the CLI): it reads and writes CentralCloud's own
-- tables and calls the job procedures; settings are changed by the owner; the ledger and the job log
-- it may add to but not erase.
REVOKE ALL ON ALL TABLES IN SCHEMA centralcloud FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA centralcloud FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA centralcloud FROM PUBLIC;
GRANT USAGE ON SCHEMA centralcloud TO svc_centralcloud;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA centralcloud TO svc_centralcloud;
REVOKE INSERT, UPDATE, DELETE ON centralcloud.settings FROM svc_centralcloud;
-- the ledger (drops redelivered messages) and the job log: written, never erased or rewritten by the
-- service; only centralcloud.prune() (SECURITY DEFINER, ages from the settings) deletes from them
REVOKE UPDATE, DELETE ON centralcloud.received, centralcloud.job_runs FROM svc_centralcloud;
GRANT UPDATE (rejected) ON centralcloud.received TO svc_centralcloud;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA centralcloud TO svc_centralcloud;
GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA centralcloud TO svc_centralcloud;
REVOKE EXECUTE ON FUNCTION centralcloud.set_setting(text, text) FROM svc_centralcloud;
-- the statistics watermark is the one setting the service writes (through this function only)
DROP FUNCTION IF EXISTS centralcloud._set_watermark(text, text);
CREATE OR REPLACE FUNCTION centralcloud._set_watermark(p_value timestamptz)
RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO centralcloud.settings (key, value) VALUES ('stats_watermark', p_value::text)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
$$;
REVOKE EXECUTE ON FUNCTION centralcloud._set_watermark(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION centralcloud._set_watermark(timestamptz) TO svc_centralcloud;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA centralcloud TO svc_centralcloud;
GRANT TRUNCATE ON centralcloud._batch_patterns, centralcloud._batch_heartbeats, centralcloud._fresh, centralcloud._items TO svc_centralcloud;
-- the ledger hashes each message (ops.request_hash, shared by every database)
GRANT USAGE ON SCHEMA ops TO svc_centralcloud;
GRANT EXECUTE ON FUNCTION ops.request_hash(jsonb) TO svc_centralcloud;
GRANT EXECUTE ON FUNCTION centralcloud._set_heartbeat_thresholds(int, int) TO svc_centralcloud;
GRANT EXECUTE ON FUNCTION ops.bus_off() TO svc_centralcloud;  -- its jobs wait while SHARED_QUEUE_ENABLED=false
