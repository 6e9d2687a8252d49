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
-- Only what really died on a queue is replayed: dead letters are written by bus._bury alone, which
-- records the queue, the msg_id and the sender the server stamped at send; the replay sends as that
-- sender (its identity is stamped again) and only if the flow table still lets it send there.
CREATE OR REPLACE FUNCTION bus.dlq_replay(p_dlq_msg_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      jsonb;
    h      jsonb;
    queue_ text;
    sender text;
    new_id bigint;
BEGIN
    SELECT message, headers INTO d, h FROM pgmq.q_dead_letters WHERE msg_id = p_dlq_msg_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead letter % does not exist', p_dlq_msg_id
            USING ERRCODE = 'no_data_found', HINT = 'orchestrator dlq list shows the ids that do.';
    END IF;
    queue_ := h->>'dead_letter_of';
    IF queue_ IS NULL OR queue_ IS DISTINCT FROM d->>'queue' THEN
        RAISE EXCEPTION 'dead letter % was not written by the bus''s dead-letter path (no record of the queue it died on '
                        'and of its sender), so it is not replayed', p_dlq_msg_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Read it (orchestrator dlq list), send what is right by hand (orchestrator send), then purge it.';
    END IF;
    PERFORM bus._queue(queue_);
    sender := d->>'sender';
    IF sender IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = sender) THEN
        RAISE EXCEPTION 'dead letter %: its sender is unknown (%), so it is not replayed as anyone', p_dlq_msg_id,
                        coalesce(sender, 'sent before the bus recorded senders')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Read it (orchestrator dlq list), send what is right by hand (orchestrator send), then purge it.';
    END IF;
    IF NOT pg_catalog.has_table_privilege(sender, pg_catalog.format('pgmq.%I', 'q_' || queue_), 'INSERT') THEN
        RAISE EXCEPTION 'dead letter %: its sender % may not send to % (flow table)', p_dlq_msg_id, sender, queue_
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The flow table (bus.flows) no longer lets that sender use this queue; purge the dead letter.';
    END IF;
    SELECT pgmq.send(queue_, d->'message', pg_catalog.jsonb_build_object('sender', sender, 'replayed_from', p_dlq_msg_id))
      INTO new_id;
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
