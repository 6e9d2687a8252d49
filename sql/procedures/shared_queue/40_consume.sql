-- Consuming: fenced acks (msg_id AND read_ct, because pgmq acks by msg_id alone and a worker
-- whose visibility timeout ran out could archive a message another worker now holds), lease
-- extension and release, retries with backoff, and dead letters. All SECURITY INVOKER: a role
-- can only do this on queues the flow table lets it consume.

-- Archive message MSG_ID of P_QUEUE if it is still the delivery READ_CT; 'acked', 'stale' or 'gone'.
CREATE OR REPLACE FUNCTION bus.ack(p_queue text, p_msg_id bigint, p_read_ct int)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q  bus.queues := bus._queue(p_queue);
    id bigint;
BEGIN
    EXECUTE format($q$
        WITH d AS (DELETE FROM pgmq.%I WHERE msg_id = $1 AND read_ct = $2
                   RETURNING msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)
        INSERT INTO pgmq.%I (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)
        SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers FROM d
        RETURNING msg_id$q$, 'q_' || q.queue_name, 'a_' || q.queue_name)
    INTO id USING p_msg_id, p_read_ct;
    IF id IS NOT NULL THEN
        RETURN 'acked';
    END IF;
    RETURN bus._why_not(q.queue_name, p_msg_id);
END;
$$;
COMMENT ON FUNCTION bus.ack(text, bigint, int) IS
    'Fenced ack: archives a message only if read_ct still matches this delivery; else says stale or gone.';

-- Batch fenced ack: archives every (msg_id, read_ct) pair that still matches; returns the acked ids.
CREATE OR REPLACE FUNCTION bus.ack(p_queue text, p_msg_ids bigint[], p_read_cts int[])
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q bus.queues := bus._queue(p_queue);
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH d AS (DELETE FROM pgmq.%I m USING unnest($1, $2) AS f(msg_id, read_ct)
                   WHERE m.msg_id = f.msg_id AND m.read_ct = f.read_ct
                   RETURNING m.msg_id, m.vt, m.read_ct, m.enqueued_at, m.last_read_at, m.message, m.headers)
        INSERT INTO pgmq.%I (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)
        SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers FROM d
        RETURNING msg_id$q$, 'q_' || q.queue_name, 'a_' || q.queue_name)
    USING p_msg_ids, p_read_cts;
END;
$$;
COMMENT ON FUNCTION bus.ack(text, bigint[], int[]) IS 'Fenced ack of a batch; returns the ids actually archived.';

-- Take the reply a requester waits for: archive the first visible message of P_QUEUE whose body
-- contains P_MATCH (e.g. {"request_id": ...}) and return it, in one statement and one commit (a read
-- then an ack would be two). Two waiters never both get it (SKIP LOCKED). No row: nothing there yet.
CREATE OR REPLACE FUNCTION bus.take(p_queue text, p_match jsonb)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q bus.queues := bus._queue(p_queue);
BEGIN
    IF p_match IS NULL OR jsonb_typeof(p_match) <> 'object' OR p_match = '{}'::jsonb THEN
        RAISE EXCEPTION 'bus.take(%): match must be a non-empty JSON object, got %', p_queue, left(coalesce(p_match::text, 'NULL'), 60)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name what the reply carries, e.g. {"request_id": "<the request''s id>"}.';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH m AS (SELECT msg_id FROM pgmq.%1$I WHERE vt <= clock_timestamp() AND message @> $1
                    ORDER BY msg_id LIMIT 1 FOR UPDATE SKIP LOCKED),
             d AS (DELETE FROM pgmq.%1$I t USING m WHERE t.msg_id = m.msg_id
                   RETURNING t.msg_id, t.vt, t.read_ct + 1 AS read_ct, t.enqueued_at, t.message, t.headers),
             a AS (INSERT INTO pgmq.%2$I (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)
                   SELECT msg_id, vt, read_ct, enqueued_at, clock_timestamp(), message, headers FROM d)
        SELECT msg_id, read_ct, enqueued_at, clock_timestamp(), vt, message, headers FROM d$q$,
        'q_' || q.queue_name, 'a_' || q.queue_name)
    USING p_match;
END;
$$;
COMMENT ON FUNCTION bus.take(text, jsonb) IS
    'Archives and returns the first visible message containing P_MATCH (a reply, taken once).';

-- Why a fenced operation on MSG_ID did nothing: 'stale' (redelivered since) or 'gone'.
CREATE OR REPLACE FUNCTION bus._why_not(p_queue text, p_msg_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog
AS $$
DECLARE
    found_ boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM pgmq.%I WHERE msg_id = $1)', 'q_' || p_queue)
    INTO found_ USING p_msg_id;
    RETURN CASE WHEN found_ THEN 'stale' ELSE 'gone' END;
END;
$$;

-- Move the lease of a held message to P_SECONDS from now (0 = release for immediate redelivery).
CREATE OR REPLACE FUNCTION bus.set_lease(p_queue text, p_msg_id bigint, p_read_ct int, p_seconds double precision)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q  bus.queues := bus._queue(p_queue);
    id bigint;
BEGIN
    IF p_seconds < 0 THEN
        RAISE EXCEPTION 'lease seconds must be >= 0, got %', p_seconds
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 0 to release a message for immediate redelivery.';
    END IF;
    EXECUTE format('UPDATE pgmq.%I SET vt = clock_timestamp() + make_interval(secs => $3)
                     WHERE msg_id = $1 AND read_ct = $2 RETURNING msg_id', 'q_' || q.queue_name)
    INTO id USING p_msg_id, p_read_ct, p_seconds;
    RETURN CASE WHEN id IS NOT NULL THEN 'ok' ELSE bus._why_not(q.queue_name, p_msg_id) END;
END;
$$;
COMMENT ON FUNCTION bus.set_lease(text, bigint, int, double precision) IS
    'Fenced set_vt: extends (or with 0 releases) the lease of a message this delivery still holds.';

-- Send a dead letter for message M of P_QUEUE (already removed from its queue by the caller).
CREATE OR REPLACE FUNCTION bus._send_dead_letter(p_queue text, p_msg_id bigint, p_message jsonb,
                                                p_error text, p_attempts int)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog
AS $$
    SELECT pgmq.send('dead_letters', jsonb_build_object(
        'queue', p_queue, 'msg_id', p_msg_id, 'message', p_message,
        'error', left(coalesce(nullif(p_error, ''), 'no reason given'), 4000), 'attempts', p_attempts,
        'failed_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
$$;

-- Move a held message to the dead-letter queue now (malformed or poison), atomically and fenced.
CREATE OR REPLACE FUNCTION bus.dead_letter(p_queue text, p_msg_id bigint, p_read_ct int, p_error text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q   bus.queues := bus._queue(p_queue);
    msg jsonb;
    rc  int;
BEGIN
    EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1 AND read_ct = $2 RETURNING message, read_ct',
                   'q_' || q.queue_name)
    INTO msg, rc USING p_msg_id, p_read_ct;
    IF rc IS NULL THEN
        RETURN bus._why_not(q.queue_name, p_msg_id);
    END IF;
    PERFORM bus._send_dead_letter(q.queue_name, p_msg_id, msg, p_error, rc);
    RETURN 'dead_lettered';
END;
$$;
COMMENT ON FUNCTION bus.dead_letter(text, bigint, int, text) IS
    'Moves a held message to dead_letters with the reason, in one transaction; fenced like ack.';

-- A processing failure: retry after a backoff, or dead-letter once attempts reach the kind's max.
CREATE OR REPLACE FUNCTION bus.fail(p_queue text, p_msg_id bigint, p_read_ct int, p_error text,
                                    p_max_attempts int DEFAULT NULL, p_backoff_s double precision DEFAULT 1)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q     bus.queues := bus._queue(p_queue);
    maxa  int;
    delay double precision;
    id    bigint;
BEGIN
    SELECT coalesce(p_max_attempts, k.max_attempts) INTO maxa FROM bus.queue_kinds k WHERE k.kind = q.kind;
    IF p_read_ct >= maxa THEN
        RETURN bus.dead_letter(q.queue_name, p_msg_id, p_read_ct,
                               format('failed %s times (max_attempts %s); last error: %s', p_read_ct, maxa, p_error));
    END IF;
    -- exponential backoff with jitter, capped at 5 minutes
    delay := least(p_backoff_s * power(2, greatest(p_read_ct - 1, 0)), 300) * (0.75 + random() * 0.5);
    EXECUTE format($q$UPDATE pgmq.%I
                        SET vt = clock_timestamp() + make_interval(secs => $3),
                            headers = coalesce(headers, '{}'::jsonb)
                                      || jsonb_build_object('last_error', left($4, 4000), 'attempts', read_ct)
                      WHERE msg_id = $1 AND read_ct = $2 RETURNING msg_id$q$, 'q_' || q.queue_name)
    INTO id USING p_msg_id, p_read_ct, delay, p_error;
    RETURN CASE WHEN id IS NOT NULL THEN 'retry' ELSE bus._why_not(q.queue_name, p_msg_id) END;
END;
$$;
COMMENT ON FUNCTION bus.fail(text, bigint, int, text, int, double precision) IS
    'Records a failed attempt: backoff via vt, or dead_letters after max_attempts; fenced like ack.';
