-- Pattern aggregation: consume pattern_messages and learned_patterns (every instance), fold each
-- instance's numbers into centralcloud.instance_patterns, then aggregate and rank into
-- centralcloud.patterns. Rules (docs/shapes.md): pattern_detection carries DELTA occurrences (summed);
-- learned_patterns carries TOTALS (they replace that instance's count for a key, and only deltas
-- enqueued after that total add to it); knowledge_summary records presence (kind, confidence,
-- packages) without changing counts. A re-delivered message is dropped by the ledger.

-- A timestamp from a pattern's first_seen/last_seen text, NULL when it is not a valid ISO timestamp
-- (checked without raising: an exception block per object would cost a subtransaction each).
CREATE OR REPLACE FUNCTION centralcloud._ts(p text)
RETURNS timestamptz LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN p ~ '^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?)?(Z|[+-]\d\d(:?\d\d)?)?$'
                THEN CASE WHEN substr(p, 9, 2)::int <= extract(day FROM make_date(substr(p, 1, 4)::int, substr(p, 6, 2)::int, 1)
                                                                      + interval '1 month - 1 day')
                          THEN p::timestamptz END
           END
$$;
COMMENT ON FUNCTION centralcloud._ts(text) IS 'Lenient ISO timestamp: NULL instead of an error for anything invalid.';

-- Sorted union of two text arrays.
CREATE OR REPLACE FUNCTION centralcloud._union(a text[], b text[])
RETURNS text[] LANGUAGE sql IMMUTABLE
AS $$ SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') FROM unnest(a || b) AS x WHERE x IS NOT NULL $$;

-- Fold the pattern messages in centralcloud._batch_patterns (not seen before) into instance_patterns.
-- Returns {messages, new, duplicates, items, rejected, conflicts}.
CREATE OR REPLACE FUNCTION centralcloud._fold_patterns()
RETURNS jsonb LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off                -- estimates over jsonb expansions are wild; JIT then costs ~1 s per batch
SET work_mem = '64MB'        -- a 20k-message batch sorts in memory
AS $$
DECLARE
    nmsg int;
    nfresh int;
    nitems int;
    nrej int;
    nconf int;
BEGIN
    TRUNCATE centralcloud._items, centralcloud._fresh;
    SELECT count(*) INTO nmsg FROM centralcloud._batch_patterns;

    -- the ledger first: same (queue, msg_id) is a redelivery and same (instance, envelope id, content) a
    -- re-sent copy (both dropped); the same instance's envelope id with other content is a conflict:
    -- recorded as refused, never folded (DESIGN.md 8b)
    WITH staged AS (
        SELECT b.*, ops.request_hash(b.message) AS sha,
               coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(b.message->'artifacts') = 'array' THEN b.message->'artifacts'
                                                WHEN jsonb_typeof(b.message->'patterns') = 'array' THEN b.message->'patterns' END), 0) AS n
          FROM centralcloud._batch_patterns b
    ), fresh AS (
        INSERT INTO centralcloud.received (queue_name, msg_id, msg_type, instance_id, enqueued_at, items, message_id,
                                           content_sha256, conflict, rejected)
        SELECT st.queue_name, st.msg_id, st.message->>'type', st.message->>'instance_id', st.enqueued_at, st.n,
               st.message->>'id', st.sha, c.clash, CASE WHEN c.clash THEN st.n ELSE 0 END
          FROM staged st
         CROSS JOIN LATERAL (SELECT EXISTS (
                   SELECT 1 FROM centralcloud.received r
                    WHERE r.instance_id = st.message->>'instance_id' AND r.message_id = st.message->>'id'
                      AND NOT r.conflict AND r.content_sha256 IS NOT NULL AND r.content_sha256 <> st.sha) AS clash) c
        ON CONFLICT DO NOTHING
        RETURNING queue_name, msg_id, conflict
    )
    INSERT INTO centralcloud._fresh SELECT queue_name, msg_id FROM fresh WHERE NOT conflict;
    GET DIAGNOSTICS nfresh = ROW_COUNT;

    INSERT INTO centralcloud._items
    SELECT b.message->>'instance_id', o->>'key', o->>'kind',
           CASE WHEN jsonb_typeof(o->'occurrences') = 'number' THEN round((o->>'occurrences')::numeric)::bigint
                WHEN o->'occurrences' IS NULL THEN 1 END,
           CASE b.message->>'type' WHEN 'learned_patterns' THEN 'total' WHEN 'knowledge_summary' THEN 'presence' ELSE 'delta' END,
           CASE WHEN jsonb_typeof(o->'confidence') = 'number' THEN (o->>'confidence')::numeric END,
           CASE WHEN o ? 'first_seen' THEN centralcloud._ts(o->>'first_seen') END,
           CASE WHEN o ? 'last_seen' THEN centralcloud._ts(o->>'last_seen') END,
           CASE WHEN jsonb_typeof(o->'packages') = 'array' THEN o->'packages' END,
           -- when the instance wrote it (a total includes every delta written before it), else when enqueued
           coalesce(centralcloud._ts(b.message->>'created_at'), b.enqueued_at),
           jsonb_typeof(o) = 'object' AND coalesce(o->>'key', '') <> '' AND coalesce(b.message->>'instance_id', '') <> ''
             AND CASE WHEN jsonb_typeof(o->'occurrences') = 'number' THEN (o->>'occurrences')::numeric >= 0
                      ELSE o->'occurrences' IS NULL END
             AND CASE WHEN jsonb_typeof(o->'confidence') = 'number' THEN (o->>'confidence')::numeric BETWEEN 0 AND 1
                      ELSE o->'confidence' IS NULL OR jsonb_typeof(o->'confidence') = 'null' END
             AND (o->'packages' IS NULL OR jsonb_typeof(o->'packages') IN ('array', 'null')),
           b.queue_name, b.msg_id
      FROM centralcloud._batch_patterns b
      JOIN centralcloud._fresh f ON f.queue_name = b.queue_name AND f.msg_id = b.msg_id
     -- a pattern given as a string is the pattern with that key; a learned_patterns message's own
     -- usage_count / success_rate (the seeds' shape) count for artifacts that carry none of their own
     CROSS JOIN LATERAL (
        SELECT jsonb_strip_nulls(jsonb_build_object('occurrences', b.message->'usage_count',
                                                    'confidence', b.message->'success_rate'))
               || CASE WHEN jsonb_typeof(x) = 'string' THEN jsonb_build_object('key', x #>> '{}') ELSE x END AS o
          FROM jsonb_array_elements(CASE WHEN b.message->>'type' = 'learned_patterns' AND jsonb_typeof(b.message->'artifacts') = 'array'
                                         THEN b.message->'artifacts'
                                         WHEN jsonb_typeof(b.message->'patterns') = 'array' THEN b.message->'patterns'
                                         ELSE '[]' END) AS e(x)) AS p;
    SELECT count(*), count(*) FILTER (WHERE NOT valid) INTO nitems, nrej FROM centralcloud._items;

    IF nrej > 0 THEN
        UPDATE centralcloud.received r SET rejected = x.n
          FROM (SELECT queue_name, msg_id, count(*) AS n FROM centralcloud._items WHERE NOT valid GROUP BY 1, 2) x
         WHERE r.queue_name = x.queue_name AND r.msg_id = x.msg_id;
    END IF;

    -- totals: the latest per (instance, key) replaces the count, unless a newer total is already in
    INSERT INTO centralcloud.instance_patterns AS ip
           (instance_id, key, kind, occurrences, confidence, first_seen, last_seen, packages, total_at)
    SELECT DISTINCT ON (instance_id, key) instance_id, key, kind, occ, confidence, first_seen, last_seen,
           coalesce(ARRAY(SELECT jsonb_array_elements_text(packages)), '{}'), at
      FROM centralcloud._items WHERE valid AND mode = 'total'
     ORDER BY instance_id, key, at DESC
    ON CONFLICT (instance_id, key) DO UPDATE
       SET occurrences = EXCLUDED.occurrences, total_at = EXCLUDED.total_at,
           kind = coalesce(EXCLUDED.kind, ip.kind), confidence = coalesce(EXCLUDED.confidence, ip.confidence),
           first_seen = least(ip.first_seen, EXCLUDED.first_seen), last_seen = greatest(ip.last_seen, EXCLUDED.last_seen),
           packages = centralcloud._union(ip.packages, EXCLUDED.packages), updated_at = now()
     WHERE ip.total_at IS NULL OR ip.total_at < EXCLUDED.total_at;

    -- deltas enqueued after the instance's latest total are added; presence only refreshes attributes
    WITH d AS (
        SELECT i.instance_id, i.key,
               (array_agg(i.kind ORDER BY i.at DESC) FILTER (WHERE i.kind IS NOT NULL))[1] AS kind,
               coalesce(sum(i.occ) FILTER (WHERE i.mode = 'delta' AND (ip.total_at IS NULL OR i.at > ip.total_at)), 0) AS occ,
               (array_agg(i.confidence ORDER BY i.at DESC) FILTER (WHERE i.confidence IS NOT NULL))[1] AS confidence,
               min(i.first_seen) AS first_seen, max(i.last_seen) AS last_seen
          FROM centralcloud._items i
          LEFT JOIN centralcloud.instance_patterns ip ON ip.instance_id = i.instance_id AND ip.key = i.key
         WHERE i.valid AND i.mode <> 'total'
         GROUP BY 1, 2
    ), pk AS (
        SELECT instance_id, key, array_agg(DISTINCT p ORDER BY p) AS packages
          FROM centralcloud._items, jsonb_array_elements_text(packages) AS p
         WHERE valid AND mode <> 'total'
         GROUP BY 1, 2
    )
    INSERT INTO centralcloud.instance_patterns AS ip
           (instance_id, key, kind, occurrences, confidence, first_seen, last_seen, packages)
    SELECT d.instance_id, d.key, d.kind, d.occ, d.confidence, d.first_seen, d.last_seen, coalesce(pk.packages, '{}')
      FROM d LEFT JOIN pk USING (instance_id, key)
    ON CONFLICT (instance_id, key) DO UPDATE
       SET occurrences = ip.occurrences + EXCLUDED.occurrences,
           kind = coalesce(EXCLUDED.kind, ip.kind), confidence = coalesce(EXCLUDED.confidence, ip.confidence),
           first_seen = least(ip.first_seen, EXCLUDED.first_seen), last_seen = greatest(ip.last_seen, EXCLUDED.last_seen),
           packages = CASE WHEN EXCLUDED.packages <@ ip.packages THEN ip.packages
                           ELSE centralcloud._union(ip.packages, EXCLUDED.packages) END,
           updated_at = now();

    SELECT count(*) INTO nconf FROM centralcloud.received r
      JOIN centralcloud._batch_patterns b ON b.queue_name = r.queue_name AND b.msg_id = r.msg_id
     WHERE r.conflict;
    RETURN jsonb_build_object('messages', nmsg, 'new', nfresh, 'duplicates', nmsg - nfresh - nconf,
                              'items', nitems, 'rejected', nrej, 'conflicts', nconf);
END;
$$;
COMMENT ON FUNCTION centralcloud._fold_patterns() IS
    'Folds the pattern messages of centralcloud._batch_patterns into instance_patterns (ledger first: duplicates dropped).';

-- Aggregate instance_patterns into patterns and rank them; returns the number of rows that changed.
CREATE OR REPLACE FUNCTION centralcloud.rank_patterns()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '64MB'
AS $$
DECLARE
    n int;
BEGIN
    WITH agg AS (
        SELECT key,
               (array_agg(kind ORDER BY updated_at DESC) FILTER (WHERE kind IS NOT NULL))[1] AS kind,
               count(*)::int AS instances,
               sum(occurrences)::bigint AS total,
               round(coalesce(sum(confidence * occurrences) FILTER (WHERE confidence IS NOT NULL)
                                / nullif(sum(occurrences) FILTER (WHERE confidence IS NOT NULL), 0),
                              avg(confidence), 0), 4) AS confidence,
               min(first_seen) AS first_seen, max(last_seen) AS last_seen
          FROM centralcloud.instance_patterns GROUP BY key
    ), pk AS (
        SELECT key, array_agg(DISTINCT p ORDER BY p) AS packages
          FROM centralcloud.instance_patterns, unnest(packages) AS p GROUP BY key
    ), ranked AS (
        SELECT agg.*, coalesce(pk.packages, '{}') AS packages,
               row_number() OVER (ORDER BY instances DESC, total DESC, confidence DESC, agg.key)::int AS rank
          FROM agg LEFT JOIN pk USING (key)
    )
    INSERT INTO centralcloud.patterns AS p
           (key, kind, instances, total_occurrences, confidence, rank, packages, first_seen, last_seen)
    SELECT key, kind, instances, total, confidence, rank, packages, first_seen, last_seen FROM ranked
    ON CONFLICT (key) DO UPDATE
       SET kind = EXCLUDED.kind, instances = EXCLUDED.instances, total_occurrences = EXCLUDED.total_occurrences,
           confidence = EXCLUDED.confidence, rank = EXCLUDED.rank, packages = EXCLUDED.packages,
           first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen, updated_at = now()
     WHERE (p.kind, p.instances, p.total_occurrences, p.confidence, p.rank, p.packages, p.first_seen, p.last_seen)
           IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.instances, EXCLUDED.total_occurrences, EXCLUDED.confidence,
                             EXCLUDED.rank, EXCLUDED.packages, EXCLUDED.first_seen, EXCLUDED.last_seen);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION centralcloud.rank_patterns() IS
    'patterns := instance_patterns aggregated (instances, total occurrences, occurrence-weighted confidence), ranked.';

-- Job `aggregate` (hourly): drain pattern_messages and learned_patterns batch by batch (commit here,
-- then ack there), then rank. Runs as svc_centralcloud; one at a time (advisory lock).
CREATE OR REPLACE PROCEDURE centralcloud.job_aggregate(INOUT result text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := clock_timestamp();
    q text;
    n int;
    r jsonb;
    msgs bigint := 0;
    dups bigint := 0;
    items bigint := 0;
    rej bigint := 0;
    conf bigint := 0;
    bs int;
    changed int;
    last_id bigint;
BEGIN
    IF ops.bus_off() IS NOT NULL THEN   -- SHARED_QUEUE_ENABLED=false: wait, and say so
        result := centralcloud._log_run('aggregate', started, true, ops.bus_off());
        COMMIT;
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(hashtext('centralcloud:aggregate')) THEN
        result := 'skipped: aggregate is already running';
        RETURN;
    END IF;
    -- totals first: then only deltas enqueued after an instance's latest total add to it
    FOREACH q IN ARRAY ARRAY['learned_patterns', 'pattern_messages'] LOOP
        last_id := 0;
        -- a learned_patterns message holds up to 500 pattern objects: smaller batches there
        bs := CASE WHEN q = 'learned_patterns' THEN centralcloud.setting('batch_size_learned', '200')::int
                   ELSE centralcloud.setting('batch_size', '20000')::int END;
        LOOP
            n := centralcloud._read_batch(q, bs, '_batch_patterns', last_id);
            EXIT WHEN n = 0;
            last_id := (SELECT max(msg_id) FROM centralcloud._batch_patterns);
            r := centralcloud._fold_patterns();
            msgs := msgs + n;
            dups := dups + (r->>'duplicates')::int;
            items := items + (r->>'items')::int;
            rej := rej + (r->>'rejected')::int;
            conf := conf + (r->>'conflicts')::int;
            COMMIT;                              -- folded here first ...
            PERFORM centralcloud._ack_batch('_batch_patterns');   -- ... then archived there (a crash between: ledger drops the redelivery)
            COMMIT;
        END LOOP;
    END LOOP;
    changed := centralcloud.rank_patterns();
    result := centralcloud._log_run('aggregate', started, true,
        format('%s messages (%s duplicates dropped%s), %s patterns folded, %s rejected; %s aggregated patterns changed',
               msgs, dups, CASE WHEN conf > 0 THEN format(', %s refused: envelope id reused for other content', conf) ELSE '' END,
               items, rej, changed));
    PERFORM centralcloud._bus_close();
    PERFORM pg_catalog.pg_advisory_unlock(hashtext('centralcloud:aggregate'));
    COMMIT;
END;
$$;
COMMENT ON PROCEDURE centralcloud.job_aggregate(text) IS 'Hourly: consume pattern messages from every instance, aggregate, rank.';
