-- Retention: archives keep SHARED_QUEUE_RETENTION_DAYS days (bus.settings 'retention_days'); older
-- rows go to cold storage first (62_cold_storage.sql). A day's rows are deleted only once its file is
-- recorded as verified, and only if the live rows are still exactly what the file holds; otherwise the
-- day waits for a new export (and bus.alerts says so). A procedure so that each batch commits on its
-- own (short locks, bounded WAL per transaction). Only archive tables (pgmq.a_*) are touched:
-- unconsumed messages are never pruned.
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
