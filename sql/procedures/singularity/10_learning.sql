-- Learning: analysis results -> learned patterns (+ pattern_detection deltas), per-agent knowledge
-- (+ knowledge_summary), and periodic totals to CentralCloud (learned_patterns).

-- One pattern as the bus carries it (docs/shapes.md "Pattern object").
CREATE OR REPLACE FUNCTION core._pattern_json(p_key text, p_kind text, p_occ bigint, p_conf numeric,
                                              p_first timestamptz, p_last timestamptz, p_packages text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('key', p_key, 'kind', p_kind, 'occurrences', p_occ, 'confidence', round(p_conf, 4),
                          'first_seen', core._iso(p_first), 'last_seen', core._iso(p_last),
                          'packages', to_jsonb(coalesce(p_packages, '{}')));

-- The patterns of an analysis result, in every shape agents send (docs/shapes.md "Analysis result"):
-- {"patterns": [...]}, {"pattern": ...}, a single pattern object {"key": ...}, a list of patterns, or a
-- bare key; a pattern given as a string is the pattern with that key. Elements without a key are skipped.
CREATE OR REPLACE FUNCTION core._result_patterns(r jsonb)
RETURNS SETOF jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN jsonb_typeof(e) = 'string' THEN jsonb_build_object('key', e #>> '{}') ELSE e END
      FROM jsonb_array_elements(CASE
               WHEN jsonb_typeof(r) = 'array' THEN r
               WHEN jsonb_typeof(r) = 'string' THEN jsonb_build_array(r)
               WHEN jsonb_typeof(r) <> 'object' THEN '[]'::jsonb
               WHEN jsonb_typeof(r->'patterns') = 'array' THEN r->'patterns'
               WHEN r ? 'pattern' THEN jsonb_build_array(r->'pattern')
               WHEN r ? 'key' THEN jsonb_build_array(r)
               ELSE '[]'::jsonb END) AS x(e)
     WHERE (jsonb_typeof(e) = 'string' AND e #>> '{}' <> '')
        OR (jsonb_typeof(e) = 'object' AND coalesce(e->>'key', '') <> '');
$$;
COMMENT ON FUNCTION core._result_patterns(jsonb) IS 'The patterns of an analysis result, whatever its shape.';

-- Learn from up to P_LIMIT unlearned results (all when NULL): upsert counts and confidence (mean of
-- the results' confidence), mark them learned, queue pattern_detection deltas (<= 500 per message).
-- Returns the number of results learned. Learners are serialised by an advisory lock.
CREATE OR REPLACE FUNCTION core.learn_patterns_from_analysis(p_limit int DEFAULT NULL)
RETURNS int LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET work_mem = '256MB'   -- one pass over up to millions of pattern rows: aggregate in memory
AS $$
DECLARE
    v_n int;
    v_max bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('core.learn_patterns_from_analysis'));
    SELECT max(id) INTO v_max FROM (
        SELECT id FROM core.analysis_results WHERE NOT learned ORDER BY id LIMIT p_limit) b;
    IF v_max IS NULL THEN
        RETURN 0;
    END IF;
    -- Marking and reading are one pass (UPDATE ... RETURNING); rows committed later with a smaller
    -- id are still unlearned and are taken by the next run.
    WITH marked AS (
        UPDATE core.analysis_results SET learned = true WHERE NOT learned AND id <= v_max
        RETURNING result, confidence, created_at
    ), pats AS MATERIALIZED (
        SELECT p->>'key' AS key, coalesce(nullif(p->>'kind', ''), 'pattern') AS kind, m.confidence, m.created_at,
               CASE WHEN jsonb_typeof(p->'packages') = 'array' THEN p->'packages' END AS pk
          FROM marked m CROSS JOIN LATERAL core._result_patterns(m.result) p
    ), kp AS (
        SELECT key, pkg FROM pats CROSS JOIN LATERAL jsonb_array_elements_text(pk) pkg
         WHERE pk IS NOT NULL GROUP BY key, pkg
    ), pkgs AS (
        SELECT key, array_agg(pkg ORDER BY pkg) AS packages FROM kp GROUP BY key
    ), agg0 AS (
        SELECT key, max(kind) AS kind, count(*) AS n, avg(confidence) AS conf,
               min(created_at) AS first_seen, max(created_at) AS last_seen
          FROM pats GROUP BY key
    ), agg AS (
        SELECT a.*, coalesce(k.packages, '{}') AS packages FROM agg0 a LEFT JOIN pkgs k USING (key)
    ), up AS (
        INSERT INTO core.learned_patterns AS lp (key, kind, occurrences, confidence, packages, first_seen, last_seen,
                                                 source_instance, updated_at)
        SELECT key, kind, n, conf, packages, first_seen, last_seen, core.instance_id(), now() FROM agg
        ON CONFLICT (key) DO UPDATE SET
            kind = EXCLUDED.kind,
            confidence = (lp.confidence * lp.occurrences + EXCLUDED.confidence * EXCLUDED.occurrences)
                         / (lp.occurrences + EXCLUDED.occurrences),
            occurrences = lp.occurrences + EXCLUDED.occurrences,
            packages = ARRAY(SELECT DISTINCT x FROM unnest(lp.packages || EXCLUDED.packages) x ORDER BY 1),
            first_seen = least(lp.first_seen, EXCLUDED.first_seen),
            last_seen = greatest(lp.last_seen, EXCLUDED.last_seen),
            updated_at = now()
        RETURNING key
    ), msgs AS (
        INSERT INTO outbox.messages (queue, message)
        SELECT 'pattern_messages',
               jsonb_build_object('type', 'pattern_detection', 'instance_id', core.instance_id(),
                                  'patterns', jsonb_agg(obj ORDER BY key), 'timestamp', core._iso(now()))
          FROM (SELECT key, core._pattern_json(key, kind, n, conf, first_seen, last_seen, packages) AS obj,
                       (row_number() OVER (ORDER BY key) - 1) / 500 AS chunk FROM agg) c
         GROUP BY chunk
        RETURNING id
    )
    SELECT (SELECT count(*) FROM marked) + 0 * (SELECT count(*) FROM up) + 0 * (SELECT count(*) FROM msgs) INTO v_n;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION core.learn_patterns_from_analysis(int) IS
    'Learns patterns from unlearned analysis results; queues pattern_detection deltas. Returns results learned.';

-- Last 24 h of each agent's results -> core.agent_knowledge and agents.known_patterns (top 100);
-- one knowledge_summary message per agent that had results. Returns the number of agents updated.
CREATE OR REPLACE FUNCTION core.update_agent_knowledge()
RETURNS int LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    WITH k AS MATERIALIZED (
        SELECT r.agent_id, p->>'key' AS key, max(coalesce(nullif(p->>'kind', ''), 'pattern')) AS kind,
               count(*) AS occurrences, avg(r.confidence) AS confidence,
               min(r.created_at) AS first_seen, max(r.created_at) AS last_seen
          FROM core.analysis_results r CROSS JOIN LATERAL jsonb_array_elements(r.result->'patterns') p
         WHERE r.created_at > now() - interval '24 hours'
         GROUP BY 1, 2
    ), del AS (
        DELETE FROM core.agent_knowledge ak
         WHERE NOT EXISTS (SELECT 1 FROM k WHERE k.agent_id = ak.agent_id AND k.key = ak.key)
    ), ins AS (
        INSERT INTO core.agent_knowledge (agent_id, key, kind, occurrences, confidence, updated_at)
        SELECT agent_id, key, kind, occurrences, confidence, now() FROM k
        ON CONFLICT (agent_id, key) DO UPDATE SET kind = EXCLUDED.kind, occurrences = EXCLUDED.occurrences,
            confidence = EXCLUDED.confidence, updated_at = now()
    ), top AS (
        SELECT ag.id, coalesce((SELECT jsonb_agg(jsonb_build_object('key', t.key, 'kind', t.kind,
                                                  'occurrences', t.occurrences, 'confidence', round(t.confidence, 4))
                                                  ORDER BY t.occurrences DESC, t.key)
                                  FROM (SELECT * FROM k WHERE k.agent_id = ag.id
                                         ORDER BY occurrences DESC, key LIMIT 100) t), '[]') AS pats
          FROM core.agents ag
    ), upd AS (
        UPDATE core.agents a SET known_patterns = top.pats, knowledge_at = now()
          FROM top WHERE a.id = top.id AND a.known_patterns IS DISTINCT FROM top.pats
    ), msgs AS (
        INSERT INTO outbox.messages (queue, message)
        SELECT 'learned_patterns',
               jsonb_build_object('type', 'knowledge_summary', 'instance_id', core.instance_id(), 'agent_id', agent_id,
                                  'patterns', jsonb_agg(core._pattern_json(key, kind, occurrences, confidence, first_seen,
                                                                           last_seen, '{}') ORDER BY occurrences DESC, key))
          FROM k GROUP BY agent_id
        RETURNING 1
    )
    SELECT count(*) INTO n FROM msgs;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.update_agent_knowledge() IS
    'Per-agent knowledge of the last 24 h into agents.known_patterns; queues knowledge_summary per agent.';

-- Patterns changed since their last sync -> learned_patterns messages of totals (<= 500 per message).
-- Returns the number of patterns sent.
CREATE OR REPLACE FUNCTION core.sync_learning_to_centralcloud()
RETURNS int LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    WITH todo AS MATERIALIZED (
        SELECT * FROM core.learned_patterns
         WHERE synced_at IS NULL OR synced_at < updated_at
         ORDER BY key FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE core.learned_patterns lp SET synced_at = now() FROM todo t WHERE lp.key = t.key RETURNING lp.key
    ), msgs AS (
        INSERT INTO outbox.messages (queue, message)
        SELECT 'learned_patterns',
               jsonb_build_object('type', 'learned_patterns', 'instance_id', core.instance_id(),
                                  'artifacts', jsonb_agg(obj ORDER BY key), 'timestamp', core._iso(now()))
          FROM (SELECT key, core._pattern_json(key, kind, occurrences, confidence, first_seen, last_seen, packages) AS obj,
                       (row_number() OVER (ORDER BY key) - 1) / 500 AS chunk FROM todo) c
         GROUP BY chunk
        RETURNING id
    )
    SELECT (SELECT count(*) FROM marked) + 0 * (SELECT count(*) FROM msgs) INTO n;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.sync_learning_to_centralcloud() IS
    'Sends totals of patterns changed since their last sync to CentralCloud (learned_patterns, 500 per message).';
