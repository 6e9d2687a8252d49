-- Read-only archive statistics for CentralCloud, computed here so that only aggregates (not the
-- archived messages themselves) cross dblink. SECURITY INVOKER: they read what svc_centralcloud
-- may read anyway (bus.archived_messages); EXECUTE is granted to svc_centralcloud only.
-- Buckets are UTC hours/days of archived_at (when a message was done with).

-- A JSON number as numeric, anything else NULL (usage fields are not validated by the bus).
CREATE OR REPLACE FUNCTION bus._cc_num(v jsonb)
RETURNS numeric
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN v::text::numeric END $$;

-- UNION ALL over the archives of every queue of KIND, restored days included (a subquery with archived_at, message).
CREATE OR REPLACE FUNCTION bus._cc_archives_of(p_kind text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(format('SELECT archived_at, message FROM pgmq.%I UNION ALL '
                                      'SELECT r.archived_at, r.message FROM bus.restored_archive r WHERE r.queue_name = %L '
                                      'AND NOT EXISTS (SELECT 1 FROM pgmq.%I a WHERE a.msg_id = r.msg_id)',
                                      'a_' || queue_name, queue_name, 'a_' || queue_name), ' UNION ALL '),
                    'SELECT NULL::timestamptz AS archived_at, NULL::jsonb AS message WHERE false')
      FROM bus.queues WHERE kind = p_kind;
$$;

-- Messages archived since P_SINCE per queue, type and hour/day, with enqueue-to-archive latency percentiles.
CREATE OR REPLACE FUNCTION bus.cc_archive_latency(p_since timestamptz)
RETURNS TABLE (bucket text, bucket_start timestamptz, queue_name text, msg_type text, messages bigint,
               p50_ms double precision, p95_ms double precision, max_read_ct int)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '256MB'
AS $$
    WITH a AS MATERIALIZED (
        -- "C" collation and date_bin (UTC-aligned): grouping 1M rows without locale compares or tz lookups
        SELECT m.queue_name COLLATE "C" AS queue_name, coalesce(m.msg_type, '(none)') COLLATE "C" AS msg_type, m.read_ct,
               date_bin('1 hour', m.archived_at, '2000-01-01 00:00:00+00') AS h,
               extract(epoch FROM m.archived_at - m.enqueued_at)::double precision * 1000 AS ms
          FROM bus.archived_messages m
         WHERE m.archived_at >= p_since
    ), hourly AS (   -- one sort per group for both percentiles
        SELECT h, queue_name, msg_type, count(*) AS n,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY ms) AS p, max(read_ct) AS mx
          FROM a GROUP BY 1, 2, 3
    ), daily AS (
        SELECT date_bin('1 day', h, '2000-01-01 00:00:00+00') AS d, queue_name, msg_type, count(*) AS n,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY ms) AS p, max(read_ct) AS mx
          FROM a GROUP BY 1, 2, 3
    )
    SELECT 'hour', h, queue_name::text, msg_type::text, n, p[1], p[2], mx FROM hourly
    UNION ALL
    SELECT 'day', d, queue_name::text, msg_type::text, n, p[1], p[2], mx FROM daily;
$$;
COMMENT ON FUNCTION bus.cc_archive_latency(timestamptz) IS
    'Archive counts and p50/p95 enqueue-to-archive latency (ms) per queue, type and UTC hour/day since a time.';

-- Approval decisions archived since P_SINCE per UTC day.
CREATE OR REPLACE FUNCTION bus.cc_archive_approvals(p_since timestamptz)
RETURNS TABLE (day date, decisions bigint, approved bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT (m.archived_at AT TIME ZONE 'UTC')::date, count(*), count(*) FILTER (WHERE m.message->'approved' = 'true'::jsonb)
          FROM (%s) m
         WHERE m.archived_at >= $1 AND m.message->>'type' = 'approval_response'
         GROUP BY 1$q$, bus._cc_archives_of('approval_responses')) USING p_since;
END;
$$;
COMMENT ON FUNCTION bus.cc_archive_approvals(timestamptz) IS 'Approval decisions and approvals per UTC day since a time.';

-- Questions archived since P_SINCE per UTC day and agent.
CREATE OR REPLACE FUNCTION bus.cc_archive_questions(p_since timestamptz)
RETURNS TABLE (day date, agent_id text, questions bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT (m.archived_at AT TIME ZONE 'UTC')::date, coalesce(m.message->>'agent_id', '(none)'), count(*)
          FROM (%s) m
         WHERE m.archived_at >= $1 AND m.message->>'type' = 'question_request'
         GROUP BY 1, 2$q$, bus._cc_archives_of('question_requests')) USING p_since;
END;
$$;
COMMENT ON FUNCTION bus.cc_archive_questions(timestamptz) IS 'Questions per agent per UTC day since a time.';

-- LLM results archived since P_SINCE per UTC day and model: calls, errors, tokens, cost (from usage).
CREATE OR REPLACE FUNCTION bus.cc_archive_llm(p_since timestamptz)
RETURNS TABLE (day date, model text, calls bigint, errors bigint, prompt_tokens bigint,
               completion_tokens bigint, cost numeric)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT (m.archived_at AT TIME ZONE 'UTC')::date, coalesce(m.message->>'model', '(none)'), count(*),
               count(*) FILTER (WHERE coalesce(m.message->>'error', '') <> ''),
               coalesce(sum(bus._cc_num(m.message->'usage'->'prompt_tokens')), 0)::bigint,
               coalesce(sum(bus._cc_num(m.message->'usage'->'completion_tokens')), 0)::bigint,
               coalesce(sum(bus._cc_num(m.message->'usage'->'cost')), 0)
          FROM (%s) m
         WHERE m.archived_at >= $1 AND m.message->>'type' = 'llm_result'
         GROUP BY 1, 2$q$, bus._cc_archives_of('llm_results')) USING p_since;
END;
$$;
COMMENT ON FUNCTION bus.cc_archive_llm(timestamptz) IS 'LLM calls, errors, tokens and cost per model per UTC day since a time.';

REVOKE EXECUTE ON FUNCTION bus.cc_archive_latency(timestamptz), bus.cc_archive_approvals(timestamptz),
    bus.cc_archive_questions(timestamptz), bus.cc_archive_llm(timestamptz), bus._cc_num(jsonb),
    bus._cc_archives_of(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bus.cc_archive_latency(timestamptz), bus.cc_archive_approvals(timestamptz),
    bus.cc_archive_questions(timestamptz), bus.cc_archive_llm(timestamptz), bus._cc_num(jsonb),
    bus._cc_archives_of(text) TO svc_centralcloud;
