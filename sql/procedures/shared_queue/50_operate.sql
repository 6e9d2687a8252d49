-- Operator functions (the owner role; REVOKEd from PUBLIC): overview, DLQ replay and purge.

-- One row per managed queue: depth, visible, oldest age, total sent, archived, dead letters.
CREATE OR REPLACE FUNCTION bus.queue_overview()
RETURNS TABLE (queue_name text, kind text, instance_id text, queue_length bigint, visible bigint,
               oldest_age_s int, total_messages bigint, dead_letters bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog
AS $$
BEGIN
    RETURN QUERY
    WITH dl AS (
        SELECT d.message->>'queue' AS q, count(*) AS n FROM pgmq.q_dead_letters d GROUP BY 1
    )
    SELECT b.queue_name, b.kind, b.instance_id, m.queue_length, m.queue_visible_length,
           m.oldest_msg_age_sec, m.total_messages, coalesce(dl.n, 0)
      FROM bus.queues b
      CROSS JOIN LATERAL pgmq.metrics(b.queue_name) m
      LEFT JOIN dl ON dl.q = b.queue_name
     ORDER BY b.instance_id NULLS FIRST, b.queue_name;
END;
$$;
COMMENT ON FUNCTION bus.queue_overview() IS 'Depth, visible, oldest age, total and dead-letter count per queue.';

-- Put dead letter P_DLQ_MSG_ID back on its original queue (validated again); returns the new msg_id.
CREATE OR REPLACE FUNCTION bus.dlq_replay(p_dlq_msg_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    d   jsonb;
    new_id bigint;
BEGIN
    SELECT message INTO d FROM pgmq.q_dead_letters WHERE msg_id = p_dlq_msg_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead letter % does not exist', p_dlq_msg_id
            USING ERRCODE = 'no_data_found', HINT = 'orchestrator dlq list shows the ids that do.';
    END IF;
    PERFORM bus._queue(d->>'queue');
    SELECT pgmq.send(d->>'queue', d->'message') INTO new_id;
    PERFORM pgmq.archive('dead_letters', p_dlq_msg_id);
    RETURN new_id;
END;
$$;
COMMENT ON FUNCTION bus.dlq_replay(bigint) IS 'Re-sends a dead letter''s original message to its queue and archives the dead letter.';

-- Archive dead letters (all, or of one queue): they leave the DLQ but stay in its archive until retention.
CREATE OR REPLACE FUNCTION bus.dlq_purge(p_queue text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT coalesce(array_agg(msg_id), '{}') INTO ids FROM pgmq.q_dead_letters
     WHERE p_queue IS NULL OR message->>'queue' = p_queue;
    PERFORM pgmq.archive('dead_letters', ids);
    RETURN cardinality(ids);
END;
$$;
COMMENT ON FUNCTION bus.dlq_purge(text) IS 'Moves dead letters to the DLQ archive (kept until retention prunes it).';

REVOKE EXECUTE ON FUNCTION bus.queue_overview(), bus.dlq_replay(bigint), bus.dlq_purge(text) FROM PUBLIC;

-- Look at messages without consuming them: the live queue or its archive (operator only).
CREATE OR REPLACE FUNCTION bus.peek(p_queue text, p_archive boolean DEFAULT false, p_limit int DEFAULT 20)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, vt timestamptz, archived_at timestamptz,
               message jsonb, headers jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog
AS $$
DECLARE
    q bus.queues := bus._queue(p_queue);
BEGIN
    IF p_archive THEN
        RETURN QUERY EXECUTE format('SELECT msg_id, read_ct, enqueued_at, vt, archived_at, message, headers
                                       FROM pgmq.%I ORDER BY msg_id DESC LIMIT $1', 'a_' || q.queue_name) USING p_limit;
    ELSE
        RETURN QUERY EXECUTE format('SELECT msg_id, read_ct, enqueued_at, vt, NULL::timestamptz, message, headers
                                       FROM pgmq.%I ORDER BY msg_id LIMIT $1', 'q_' || q.queue_name) USING p_limit;
    END IF;
END;
$$;
COMMENT ON FUNCTION bus.peek(text, boolean, int) IS 'Shows messages of a queue or its archive without changing them.';
REVOKE EXECUTE ON FUNCTION bus.peek(text, boolean, int) FROM PUBLIC;
