-- CentralCloud plumbing: settings, the dblink connection to shared_queue, remote reads/sends/acks,
-- the job log. Jobs are procedures (they COMMIT per batch), so they carry no SET search_path and
-- name everything schema-qualified; they run as svc_centralcloud (pg_cron or the CLI).

INSERT INTO centralcloud.settings (key, value) VALUES
    ('batch_size', '20000'),           -- messages read per batch over dblink (pattern_messages, heartbeats)
    ('batch_size_learned', '200'),     -- learned_patterns messages per batch (each up to 500 patterns)
    ('heartbeat_late_s', '180'),       -- no heartbeat for this long: late (copied from the bus's alert_heartbeat_late_s)
    ('heartbeat_gone_s', '600'),       -- ... for this long: gone (the bus's alert_heartbeat_gone_s)
    ('sync_chunk', '500'),             -- patterns per aggregated_patterns message
    ('sync_limit', '10000'),           -- at most this many top-ranked patterns are synced
    ('ledger_days', '7'),              -- ledger entries kept this long (package_sync prunes daily)
    ('job_runs_days', '30')            -- job runs kept this long
ON CONFLICT (key) DO NOTHING;

-- Setting KEY as text (P_DEFAULT when unset).
CREATE OR REPLACE FUNCTION centralcloud.setting(p_key text, p_default text DEFAULT NULL)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT value FROM centralcloud.settings WHERE key = p_key), p_default) $$;

-- Set setting KEY (operator: `orchestrator centralcloud` or psql as the owner).
CREATE OR REPLACE FUNCTION centralcloud.set_setting(p_key text, p_value text)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO centralcloud.settings (key, value) VALUES (p_key, p_value)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
$$;

-- The name of this session's dblink connection to shared_queue (server `bus`), opened on first use.
CREATE OR REPLACE FUNCTION centralcloud._bus()
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce('cc_bus' = ANY (extensions.dblink_get_connections()), false) THEN
        BEGIN
            PERFORM extensions.dblink_connect('cc_bus', 'bus');
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'centralcloud cannot reach shared_queue over dblink server "bus": %', SQLERRM
                USING ERRCODE = 'connection_exception',
                      HINT = 'Run `orchestrator migrate` (it creates the server and user mapping) and check that shared_queue is up.';
        END;
    END IF;
    RETURN 'cc_bus';
END;
$$;
COMMENT ON FUNCTION centralcloud._bus() IS 'Opens (once per session) the dblink connection to shared_queue and names it.';

-- Close the dblink connection (end of a job; the next job opens a fresh one).
CREATE OR REPLACE FUNCTION centralcloud._bus_close()
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce('cc_bus' = ANY (extensions.dblink_get_connections()), false) THEN
        PERFORM extensions.dblink_disconnect('cc_bus');
    END IF;
END;
$$;

-- Read up to P_N visible messages of P_QUEUE from shared_queue into staging table P_INTO (emptied
-- first), oldest first, ids above P_AFTER (a job pages through the queue by id). No lease (pgmq.read would rewrite every row once more): the jobs that read a
-- queue hold an advisory lock, CentralCloud is the queue's only consumer, and whatever is read twice
-- (a crash before the ack) is dropped by the ledger. The ack is fenced by read_ct as usual.
DROP FUNCTION IF EXISTS centralcloud._read_batch(text, int, text);
CREATE OR REPLACE FUNCTION centralcloud._read_batch(p_queue text, p_n int, p_into text, p_after bigint DEFAULT 0)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    IF p_into NOT IN ('_batch_patterns', '_batch_heartbeats') THEN
        RAISE EXCEPTION 'unknown staging table %', p_into USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use _batch_patterns or _batch_heartbeats.';
    END IF;
    EXECUTE format('TRUNCATE centralcloud.%I', p_into);
    EXECUTE format($q$INSERT INTO centralcloud.%I
        SELECT $1, t.msg_id, t.read_ct, t.enqueued_at, t.message
          FROM extensions.dblink($2, $3) AS t(msg_id bigint, read_ct int, enqueued_at timestamptz, message jsonb)$q$, p_into)
    USING p_queue, centralcloud._bus(),
          format('SELECT msg_id, read_ct, enqueued_at, message FROM pgmq.%I WHERE msg_id > %s AND vt <= clock_timestamp()'
                 ' ORDER BY msg_id LIMIT %s', 'q_' || p_queue, p_after, p_n);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION centralcloud._read_batch(text, int, text, bigint) IS 'Reads a batch of a queue (oldest visible first) over dblink into a staging table.';

-- Fenced ack (archive) in shared_queue of every message in staging table P_FROM; returns how many were archived.
CREATE OR REPLACE FUNCTION centralcloud._ack_batch(p_from text)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text;
    ids bigint[];
    cts int[];
    n int := 0;
BEGIN
    FOR q, ids, cts IN EXECUTE format('SELECT queue_name, array_agg(msg_id), array_agg(read_ct) FROM centralcloud.%I GROUP BY 1',
                                      p_from) LOOP
        SELECT n + count(*) INTO n
          FROM extensions.dblink(centralcloud._bus(), format('SELECT bus.ack(%L, %L::bigint[], %L::int[])', q, ids, cts)) AS t(id bigint);
    END LOOP;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION centralcloud._ack_batch(text) IS 'Archives the batch in shared_queue (fenced by read_ct) after it was committed here.';

-- Send message P_MSG to queue P_QUEUE of shared_queue (validated there); returns its msg_id.
CREATE OR REPLACE FUNCTION centralcloud._send(p_queue text, p_msg jsonb)
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.id FROM extensions.dblink(centralcloud._bus(), format('SELECT pgmq.send(%L, %L::jsonb)', p_queue, p_msg)) AS t(id bigint);
$$;

-- The shared_queue queues of KIND (one inbox per instance: knowledge_updates, template_updates).
CREATE OR REPLACE FUNCTION centralcloud._queues_of(p_kind text)
RETURNS SETOF text LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.q FROM extensions.dblink(centralcloud._bus(),
        format('SELECT queue_name FROM bus.queues WHERE kind = %L ORDER BY queue_name', p_kind)) AS t(q text);
$$;

-- Record a job run (pg_cron and the CLI both end up here).
CREATE OR REPLACE FUNCTION centralcloud._log_run(p_job text, p_started timestamptz, p_ok boolean, p_result text)
RETURNS text LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO centralcloud.job_runs (job, started_at, ok, result) VALUES (p_job, p_started, p_ok, p_result);
    SELECT CASE WHEN p_ok THEN 'ok: ' ELSE 'failed: ' END || p_result;
$$;

-- Latest run of every job.
CREATE OR REPLACE VIEW centralcloud.job_status AS
SELECT DISTINCT ON (job) job, started_at, finished_at, ok, result
  FROM centralcloud.job_runs ORDER BY job, id DESC;
