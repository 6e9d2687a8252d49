-- Package catalogue (daily) and pattern sync (hourly, after aggregation): publish the aggregated,
-- ranked patterns to every instance's knowledge_updates queue, only when they changed since the
-- last message to that queue (a second run sends nothing).

-- Rebuild centralcloud.packages from instance_patterns; returns rows changed (inserted/updated/deleted).
CREATE OR REPLACE FUNCTION centralcloud.refresh_packages()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
    d int;
BEGIN
    INSERT INTO centralcloud.packages AS p (package, patterns, instances, occurrences)
    SELECT pk, count(DISTINCT key), count(DISTINCT instance_id), sum(occurrences)
      FROM centralcloud.instance_patterns, unnest(packages) AS pk
     GROUP BY pk
    ON CONFLICT (package) DO UPDATE
       SET patterns = EXCLUDED.patterns, instances = EXCLUDED.instances, occurrences = EXCLUDED.occurrences,
           updated_at = now()
     WHERE (p.patterns, p.instances, p.occurrences) IS DISTINCT FROM (EXCLUDED.patterns, EXCLUDED.instances, EXCLUDED.occurrences);
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM centralcloud.packages p
     WHERE NOT EXISTS (SELECT 1 FROM centralcloud.instance_patterns ip WHERE p.package = ANY (ip.packages));
    GET DIAGNOSTICS d = ROW_COUNT;
    RETURN n + d;
END;
$$;

-- Housekeeping: ledger entries older than `ledger_days` (an acked message never comes back, and an
-- unacked one comes back at the next run) and job runs older than `job_runs_days`. Returns rows deleted.
-- SECURITY DEFINER: svc_centralcloud runs it (package_sync) but may not delete the ledger or the job
-- log itself (90_grants.sql), and the ages are settings only the owner may change.
CREATE OR REPLACE FUNCTION centralcloud.prune()
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a bigint;
    b bigint;
BEGIN
    DELETE FROM centralcloud.received r
     WHERE r.received_at < now() - make_interval(days => centralcloud.setting('ledger_days', '7')::int);
    GET DIAGNOSTICS a = ROW_COUNT;
    DELETE FROM centralcloud.job_runs j
     WHERE j.finished_at < now() - make_interval(days => centralcloud.setting('job_runs_days', '30')::int);
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN a + b;
END;
$$;

-- Job `package_sync` (daily); also prunes the ledger and the job log.
CREATE OR REPLACE PROCEDURE centralcloud.job_package_sync(INOUT result text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := clock_timestamp();
    n int := centralcloud.refresh_packages();
    pruned bigint := centralcloud.prune();
BEGIN
    IF ops.bus_off() IS NOT NULL THEN   -- SHARED_QUEUE_ENABLED=false: wait, and say so
        result := centralcloud._log_run('package-sync', started, true, ops.bus_off());
        COMMIT;
        RETURN;
    END IF;
    result := centralcloud._log_run('package-sync', started, true,
        format('%s packages in the catalogue, %s changed; %s old ledger/job rows pruned',
               (SELECT count(*) FROM centralcloud.packages), n, pruned));
    COMMIT;
END;
$$;
COMMENT ON PROCEDURE centralcloud.job_package_sync(text) IS 'Daily: catalogue of packages/frameworks seen in patterns, with usage.';

-- The aggregated_patterns messages for the current ranking: chunks of `sync_chunk` patterns.
CREATE OR REPLACE FUNCTION centralcloud.aggregated_messages(p_generated_at timestamptz DEFAULT now())
RETURNS SETOF jsonb LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH top AS (
        SELECT * FROM centralcloud.patterns ORDER BY rank LIMIT centralcloud.setting('sync_limit', '10000')::int
    ), parts AS (
        SELECT (rank - 1) / centralcloud.setting('sync_chunk', '500')::int AS part,
               jsonb_agg(jsonb_build_object('key', key, 'kind', kind, 'instances', instances,
                   'total_occurrences', total_occurrences, 'confidence', confidence, 'rank', rank,
                   'packages', to_jsonb(packages)) ORDER BY rank) AS patterns
          FROM top GROUP BY 1
    )
    SELECT jsonb_build_object('type', 'aggregated_patterns', 'patterns', patterns,
               'generated_at', to_char(p_generated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'part', part + 1, 'parts', count(*) OVER ())
      FROM parts ORDER BY part;
$$;
COMMENT ON FUNCTION centralcloud.aggregated_messages(timestamptz) IS 'The aggregated_patterns messages (docs/shapes.md) for the current ranking.';

-- Digest of what pattern sync would send (key, kind, counts, confidence, rank, packages).
CREATE OR REPLACE FUNCTION centralcloud.patterns_digest()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(coalesce(string_agg(concat_ws('|', key, kind, instances, total_occurrences, confidence, rank,
                                             array_to_string(packages, ',')), E'\n' ORDER BY rank), ''))
      FROM (SELECT * FROM centralcloud.patterns ORDER BY rank LIMIT centralcloud.setting('sync_limit', '10000')::int) t;
$$;

-- Job `pattern_sync` (hourly, after aggregate): send to every knowledge_updates queue whose last
-- sync had another digest. Remote send first, then the local record (a crash between resends).
CREATE OR REPLACE PROCEDURE centralcloud.job_pattern_sync(INOUT result text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := clock_timestamp();
    dg text := centralcloud.patterns_digest();
    npat int := (SELECT count(*) FROM centralcloud.patterns);
    q text;
    m jsonb;
    msgs jsonb[];
    sentq int := 0;
    upto int := 0;
BEGIN
    IF ops.bus_off() IS NOT NULL THEN   -- SHARED_QUEUE_ENABLED=false: wait, and say so
        result := centralcloud._log_run('pattern-sync', started, true, ops.bus_off());
        COMMIT;
        RETURN;
    END IF;
    IF npat = 0 THEN
        result := centralcloud._log_run('pattern-sync', started, true, 'no aggregated patterns yet; nothing sent');
        COMMIT;
        RETURN;
    END IF;
    msgs := ARRAY(SELECT centralcloud.aggregated_messages(started));
    FOR q IN SELECT * FROM centralcloud._queues_of('knowledge_updates') LOOP
        IF EXISTS (SELECT 1 FROM centralcloud.pattern_syncs WHERE queue_name = q AND digest = dg) THEN
            upto := upto + 1;
            CONTINUE;
        END IF;
        FOREACH m IN ARRAY msgs LOOP
            PERFORM centralcloud._send(q, m);
        END LOOP;
        INSERT INTO centralcloud.pattern_syncs (queue_name, digest, patterns, messages, sent_at)
        VALUES (q, dg, least(npat, centralcloud.setting('sync_limit', '10000')::int), cardinality(msgs), now())
        ON CONFLICT (queue_name) DO UPDATE SET digest = EXCLUDED.digest, patterns = EXCLUDED.patterns,
            messages = EXCLUDED.messages, sent_at = EXCLUDED.sent_at;
        COMMIT;
        sentq := sentq + 1;
    END LOOP;
    result := centralcloud._log_run('pattern-sync', started, true,
        format('%s patterns in %s message(s) sent to %s instance queue(s); %s already up to date',
               npat, cardinality(msgs), sentq, upto));
    PERFORM centralcloud._bus_close();
    COMMIT;
END;
$$;
COMMENT ON PROCEDURE centralcloud.job_pattern_sync(text) IS 'Hourly: publish aggregated_patterns to every instance that has not got this ranking yet.';
