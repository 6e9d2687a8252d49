-- Retention: archives keep SHARED_QUEUE_RETENTION_DAYS days (bus.settings 'retention_days').
-- A procedure so that each batch commits on its own (short locks, bounded WAL per transaction).
-- Only archive tables (pgmq.a_*) are touched: unconsumed messages are never pruned.
CREATE OR REPLACE PROCEDURE bus.prune_archives(p_batch int DEFAULT 5000, p_max_batches int DEFAULT 1000)
LANGUAGE plpgsql
-- No SET clause here: a procedure with one cannot COMMIT ("invalid transaction termination").
-- Every name below is schema-qualified instead.
AS $$
DECLARE
    days    int := coalesce(bus.setting('retention_days'), '90')::int;
    cutoff  timestamptz := now() - make_interval(days => days);
    qn      text;
    n       bigint;
    total   bigint;
    batches int := 0;
BEGIN
    FOR qn IN SELECT queue_name FROM bus.queues ORDER BY queue_name LOOP
        total := 0;
        LOOP
            EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id IN (
                              SELECT msg_id FROM pgmq.%I WHERE archived_at < $1 ORDER BY archived_at LIMIT $2)',
                           'a_' || qn, 'a_' || qn)
            USING cutoff, p_batch;
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            batches := batches + 1;
            COMMIT;
            EXIT WHEN n < p_batch OR batches >= p_max_batches;
        END LOOP;
        IF total > 0 THEN
            INSERT INTO bus.prune_log (queue_name, cutoff, deleted) VALUES (qn, cutoff, total);
            COMMIT;
        END IF;
        EXIT WHEN batches >= p_max_batches;
    END LOOP;
END;
$$;
COMMENT ON PROCEDURE bus.prune_archives(int, int) IS
    'Deletes archive rows older than retention_days in committed batches; never touches live queues.';
REVOKE EXECUTE ON PROCEDURE bus.prune_archives(int, int) FROM PUBLIC;
