-- Retention: archives keep SHARED_QUEUE_RETENTION_DAYS days (bus.settings 'retention_days'); older
-- rows go to cold storage first (62_cold_storage.sql). A day's rows are deleted only once its file is
-- recorded as verified, and only if the live rows are still exactly what the file holds; otherwise the
-- day waits for a new export (and bus.alerts says so). A procedure so that each batch commits on its
-- own (short locks, bounded WAL per transaction). Only archive tables (pgmq.a_*) are touched:
-- unconsumed messages are never pruned.
-- Partitioned queues (bus.queue_kinds.partition_interval): an archive partition wholly past retention is
-- dropped in one statement instead of deleting its rows, but only when every UTC day in it that has rows
-- is recorded verified (or already being pruned) in bus.cold_exports, and the rows are still exactly what
-- the file holds (bus.cold_digest; a day that changed goes back to unverified, as in prune_archives). A
-- partition whose bounds are not whole UTC days, and the default partition, are left to the row deletes.
-- Returns the partitions dropped; their days are marked pruned (with pruning_at) in the catalog.
CREATE OR REPLACE FUNCTION bus.prune_partitions()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       record;
    d       date;
    e       bus.cold_exports;
    g       record;
    ok      boolean;
    total   bigint;
    dropped integer := 0;
    cutoff  timestamptz := bus.cold_cutoff()::timestamp AT TIME ZONE 'UTC';
BEGIN
    FOR p IN SELECT m.queue_name, c.oid::regclass AS part,
                    (regexp_match(pg_get_expr(c.relpartbound, c.oid), $r$FROM \('([^']+)'\) TO \('([^']+)'\)$r$)) AS b
               FROM pgmq.meta m
               JOIN bus.queues q ON q.queue_name = m.queue_name
               JOIN pg_inherits i ON i.inhparent = to_regclass(format('pgmq.%I', 'a_' || m.queue_name))
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE m.is_partitioned
              ORDER BY 1, 2 LOOP
        CONTINUE WHEN p.b IS NULL OR p.b[2]::timestamptz > cutoff
                   OR (p.b[1]::timestamptz AT TIME ZONE 'UTC')::time <> '00:00'
                   OR (p.b[2]::timestamptz AT TIME ZONE 'UTC')::time <> '00:00';
        ok := true;
        total := 0;
        FOR d IN SELECT generate_series((p.b[1]::timestamptz AT TIME ZONE 'UTC')::date,
                                        (p.b[2]::timestamptz AT TIME ZONE 'UTC')::date - 1, interval '1 day')::date LOOP
            SELECT * INTO e FROM bus.cold_exports x WHERE x.queue_name = p.queue_name AND x.day = d;
            IF e.pruning_at IS NOT NULL THEN   -- already being pruned: the file is the only full copy
                CONTINUE;
            END IF;
            SELECT * INTO g FROM bus.cold_digest(p.queue_name, d);
            CONTINUE WHEN g.rows = 0;
            IF e.verified_at IS NULL THEN
                ok := false;                   -- not exported (or unverified): the partition stays
                EXIT;
            END IF;
            IF g.rows <> e.rows OR g.checksum <> e.rows_checksum THEN
                UPDATE bus.cold_exports
                   SET verified_at = NULL,
                       note = format('the archive has %s rows for this day, the file %s: export it again', g.rows, e.rows)
                 WHERE queue_name = p.queue_name AND day = d;
                ok := false;
                EXIT;
            END IF;
            total := total + g.rows;
        END LOOP;
        CONTINUE WHEN NOT ok;
        UPDATE bus.cold_exports SET pruning_at = coalesce(pruning_at, now()), pruned_at = now()
         WHERE queue_name = p.queue_name AND pruned_at IS NULL
           AND day >= (p.b[1]::timestamptz AT TIME ZONE 'UTC')::date AND day < (p.b[2]::timestamptz AT TIME ZONE 'UTC')::date;
        EXECUTE format('DROP TABLE %s', p.part);
        INSERT INTO bus.prune_log (queue_name, cutoff, deleted) VALUES (p.queue_name, p.b[2]::timestamptz, total);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;
COMMENT ON FUNCTION bus.prune_partitions() IS
    'Drops archive partitions of partitioned queues past retention whose every day is exported to cold storage and verified.';
REVOKE EXECUTE ON FUNCTION bus.prune_partitions() FROM PUBLIC;

-- No SET search_path clause: a procedure with one may not COMMIT; every name is schema-qualified.
CREATE OR REPLACE PROCEDURE bus.prune_archives(p_batch int DEFAULT 5000, p_max_batches int DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
    e       record;
    d       record;
    n       bigint := 0;
    total   bigint;
    batches int := 0;
BEGIN
    PERFORM bus.prune_partitions();   -- whole partitions first; what is left goes row by row below
    COMMIT;
    FOR e IN SELECT c.queue_name, c.day, c.rows, c.rows_checksum, c.pruning_at, c.file
               FROM bus.cold_exports c
              WHERE c.pruned_at IS NULL AND (c.verified_at IS NOT NULL OR c.pruning_at IS NOT NULL)
                AND c.day < bus.cold_cutoff()
                AND EXISTS (SELECT 1 FROM bus.queues q WHERE q.queue_name = c.queue_name)
              ORDER BY c.day, c.queue_name LOOP
        IF e.pruning_at IS NULL THEN
            -- the file was verified against these rows; they must not have changed since
            SELECT * INTO d FROM bus.cold_digest(e.queue_name, e.day);
            IF d.rows <> e.rows OR d.checksum <> e.rows_checksum THEN
                UPDATE bus.cold_exports
                   SET verified_at = NULL,
                       note = pg_catalog.format('the archive has %s rows for this day, the file %s: export it again',
                                                d.rows, e.rows)
                 WHERE queue_name = e.queue_name AND day = e.day;
                COMMIT;
                CONTINUE;
            END IF;
            UPDATE bus.cold_exports SET pruning_at = pg_catalog.now() WHERE queue_name = e.queue_name AND day = e.day;
            COMMIT;
        END IF;
        total := 0;
        LOOP   -- a crash here leaves pruning_at set: the next run finishes the day without re-checking it
            EXECUTE pg_catalog.format(
                'DELETE FROM pgmq.%I WHERE msg_id IN (SELECT msg_id FROM pgmq.%I
                  WHERE archived_at >= ($1::timestamp AT TIME ZONE ''UTC'') AND archived_at < (($1 + 1)::timestamp AT TIME ZONE ''UTC'')
                  LIMIT $2)', 'a_' || e.queue_name, 'a_' || e.queue_name)
            USING e.day, p_batch;
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            batches := batches + 1;
            COMMIT;
            EXIT WHEN n < p_batch OR batches >= p_max_batches;
        END LOOP;
        IF n < p_batch THEN
            UPDATE bus.cold_exports SET pruned_at = pg_catalog.now() WHERE queue_name = e.queue_name AND day = e.day;
        END IF;
        IF total > 0 THEN
            INSERT INTO bus.prune_log (queue_name, cutoff, deleted)
            VALUES (e.queue_name, (e.day + 1)::timestamp AT TIME ZONE 'UTC', total);
        END IF;
        COMMIT;
        EXIT WHEN batches >= p_max_batches;
    END LOOP;
END;
$$;
COMMENT ON PROCEDURE bus.prune_archives(int, int) IS
    'Deletes archive rows past retention_days whose day is exported to cold storage and verified, in committed batches.';
REVOKE EXECUTE ON PROCEDURE bus.prune_archives(int, int) FROM PUBLIC;
