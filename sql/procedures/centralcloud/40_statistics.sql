-- Statistics from the shared_queue archives, read-only: shared_queue computes the aggregates
-- (bus.cc_archive_* in sql/procedures/shared_queue/86_centralcloud.sql) and only those cross dblink.
-- Each run recomputes every UTC day from the day of the previous run on (so late archives land in
-- the right bucket) and replaces those rows: running it twice stores the same numbers.

-- Replace statistics from P_SINCE (truncated to its UTC day) up to P_UNTIL (exclusive; a day restored
-- from cold storage is refreshed alone, the days around it keep their numbers); returns {since, ...}.
CREATE OR REPLACE FUNCTION centralcloud.refresh_statistics(p_since timestamptz, p_until timestamptz DEFAULT 'infinity')
RETURNS jsonb LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    since timestamptz := date_trunc('day', coalesce(p_since, '-infinity'), 'UTC');
    nlat int; nappr int; nq int; nllm int;
BEGIN
    IF since = '-infinity' THEN
        since := '1970-01-01 00:00:00+00';
    END IF;
    DELETE FROM centralcloud.stats_latency WHERE bucket_start >= since AND bucket_start < p_until;
    INSERT INTO centralcloud.stats_latency
    SELECT * FROM extensions.dblink(centralcloud._bus(), format('SELECT * FROM bus.cc_archive_latency(%L)', since))
         AS t(bucket text, bucket_start timestamptz, queue_name text, msg_type text, messages bigint,
              p50_ms double precision, p95_ms double precision, max_read_ct int)
     WHERE t.bucket_start < p_until;
    GET DIAGNOSTICS nlat = ROW_COUNT;

    DELETE FROM centralcloud.stats_approvals WHERE day >= (since AT TIME ZONE 'UTC')::date AND day < (p_until AT TIME ZONE 'UTC')::date;
    INSERT INTO centralcloud.stats_approvals
    SELECT * FROM extensions.dblink(centralcloud._bus(), format('SELECT * FROM bus.cc_archive_approvals(%L)', since))
         AS t(day date, decisions bigint, approved bigint)
     WHERE t.day < (p_until AT TIME ZONE 'UTC')::date;
    GET DIAGNOSTICS nappr = ROW_COUNT;

    DELETE FROM centralcloud.stats_questions WHERE day >= (since AT TIME ZONE 'UTC')::date AND day < (p_until AT TIME ZONE 'UTC')::date;
    INSERT INTO centralcloud.stats_questions
    SELECT * FROM extensions.dblink(centralcloud._bus(), format('SELECT * FROM bus.cc_archive_questions(%L)', since))
         AS t(day date, agent_id text, questions bigint)
     WHERE t.day < (p_until AT TIME ZONE 'UTC')::date;
    GET DIAGNOSTICS nq = ROW_COUNT;

    DELETE FROM centralcloud.stats_llm WHERE day >= (since AT TIME ZONE 'UTC')::date AND day < (p_until AT TIME ZONE 'UTC')::date;
    INSERT INTO centralcloud.stats_llm
    SELECT * FROM extensions.dblink(centralcloud._bus(), format('SELECT * FROM bus.cc_archive_llm(%L)', since))
         AS t(day date, model text, calls bigint, errors bigint, prompt_tokens bigint, completion_tokens bigint, cost numeric)
     WHERE t.day < (p_until AT TIME ZONE 'UTC')::date;
    GET DIAGNOSTICS nllm = ROW_COUNT;
    RETURN jsonb_build_object('since', since, 'latency_rows', nlat, 'approval_days', nappr,
                              'question_rows', nq, 'llm_rows', nllm);
END;
$$;
COMMENT ON FUNCTION centralcloud.refresh_statistics(timestamptz, timestamptz) IS
    'Recomputes archive statistics for UTC days from since to until (aggregated in shared_queue, copied here).';

-- Job `statistics` (hourly): refresh from the day of the previous run on.
CREATE OR REPLACE PROCEDURE centralcloud.job_statistics(INOUT result text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := clock_timestamp();
    r jsonb;
BEGIN
    IF ops.bus_off() IS NOT NULL THEN   -- SHARED_QUEUE_ENABLED=false: wait, and say so
        result := centralcloud._log_run('statistics', started, true, ops.bus_off());
        COMMIT;
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(hashtext('centralcloud:statistics')) THEN
        result := 'skipped: statistics is already running';
        RETURN;
    END IF;
    r := centralcloud.refresh_statistics(centralcloud.setting('stats_watermark')::timestamptz);
    PERFORM centralcloud._set_watermark(started);
    result := centralcloud._log_run('statistics', started, true,
        format('from %s: %s latency rows, %s approval days, %s question rows, %s llm rows',
               to_char((r->>'since')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD'), r->>'latency_rows',
               r->>'approval_days', r->>'question_rows', r->>'llm_rows'));
    PERFORM centralcloud._bus_close();
    PERFORM pg_catalog.pg_advisory_unlock(hashtext('centralcloud:statistics'));
    COMMIT;
END;
$$;
COMMENT ON PROCEDURE centralcloud.job_statistics(text) IS 'Hourly: statistics from the shared_queue archives.';
