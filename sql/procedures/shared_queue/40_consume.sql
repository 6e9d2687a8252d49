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

-- Answer a batch in one transaction (one commit): the fenced ack of each delivery (P_MSG_IDS[i],
-- P_READ_CTS[i]) of P_QUEUE and, for each one acked, its result P_RESULTS[i] sent to P_REPLY_TO[i].
-- A delivery that is stale or gone sends nothing. Returns each msg_id with acked / stale / gone, in order.
CREATE OR REPLACE FUNCTION bus.reply(p_queue text, p_msg_ids bigint[], p_read_cts int[], p_reply_to text[],
                                     p_results jsonb[])
RETURNS TABLE (msg_id bigint, status text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int := cardinality(p_msg_ids);
    acked bigint[];
    rq text;
BEGIN
    IF n IS NULL OR cardinality(p_read_cts) IS DISTINCT FROM n OR cardinality(p_reply_to) IS DISTINCT FROM n
       OR cardinality(p_results) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'bus.reply(%): msg_ids, read_cts, reply_to and results must be arrays of the same length', p_queue
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass one read_ct, reply queue and result per msg_id.';
    END IF;
    acked := ARRAY(SELECT bus.ack(p_queue, p_msg_ids, p_read_cts));
    FOR rq IN SELECT DISTINCT r.q FROM unnest(p_msg_ids, p_reply_to) AS r(id, q) WHERE r.id = ANY (acked) ORDER BY 1 LOOP
        PERFORM pgmq.send_batch(rq, ARRAY(SELECT r.m FROM unnest(p_msg_ids, p_reply_to, p_results) WITH ORDINALITY
                                                     AS r(id, q, m, k)
                                           WHERE r.q = rq AND r.id = ANY (acked) ORDER BY r.k));
    END LOOP;
    RETURN QUERY SELECT i.id, CASE WHEN i.id = ANY (acked) THEN 'acked' ELSE bus._why_not(p_queue, i.id) END
                   FROM unnest(p_msg_ids) WITH ORDINALITY AS i(id, k) ORDER BY i.k;
END;
$$;
COMMENT ON FUNCTION bus.reply(text, bigint[], int[], text[], jsonb[]) IS
    'Fenced ack of a batch plus the result of each delivery acked, in one transaction.';

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

-- P_CLAIMED if this session may act as that role (the role itself, or a role it is a member of,
-- e.g. a superuser's SET ROLE); 42501 otherwise. Definers below get the caller's role from an
-- invoker wrapper (current_user there) and check the claim here, so calling them directly with
-- another role's name gets nowhere.
CREATE OR REPLACE FUNCTION bus._caller(p_claimed name)
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_claimed IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = p_claimed)
       OR NOT pg_catalog.pg_has_role(session_user, p_claimed, 'MEMBER') THEN
        RAISE EXCEPTION 'role % may not act as %', session_user, coalesce(p_claimed::text, 'NULL')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call bus.fail / bus.dead_letter / bus.read, which pass your own role.';
    END IF;
    RETURN p_claimed;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus._caller(name) FROM PUBLIC;

-- 42501 unless ROLE consumes queue Q (holds DELETE on its table, as the flow table grants).
CREATE OR REPLACE FUNCTION bus._require_consumer(p_role name, q bus.queues, p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF q.kind = 'dead_letters' OR NOT pg_catalog.has_table_privilege(p_role, pg_catalog.format('pgmq.%I', 'q_' || q.queue_name), 'DELETE') THEN
        RAISE EXCEPTION '% does not consume %: only a consumer of a queue may % its messages', p_role, q.queue_name, p_what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'See the flow table (bus.flows, DESIGN.md section 5) for who consumes which queue.';
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus._require_consumer(name, bus.queues, text) FROM PUBLIC;

-- The dead-letter path, the only one (DESIGN.md 8b): remove delivery (P_MSG_ID, P_READ_CT) from
-- P_QUEUE and record it in dead_letters with the real message, the server's record of its sender
-- (headers.sender at send), the queue it died on and the consumer that gave up. Runs as the bus
-- owner (no service role may insert into dead_letters); P_CALLER must be the session's own role
-- and a consumer of P_QUEUE. Returns 'dead_lettered', or 'stale' / 'gone' (fenced like ack).
CREATE OR REPLACE FUNCTION bus._bury(p_caller name, p_queue text, p_msg_id bigint, p_read_ct int, p_error text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := bus._caller(p_caller);
    q      bus.queues := bus._queue(p_queue);
    msg    jsonb;
    hdr    jsonb;
    rc     int;
BEGIN
    PERFORM bus._require_consumer(caller, q, 'dead-letter');
    EXECUTE pg_catalog.format('DELETE FROM pgmq.%I WHERE msg_id = $1 AND read_ct = $2 RETURNING message, headers, read_ct',
                              'q_' || q.queue_name)
    INTO msg, hdr, rc USING p_msg_id, p_read_ct;
    IF rc IS NULL THEN
        RETURN bus._why_not(q.queue_name, p_msg_id);
    END IF;
    PERFORM pgmq.send('dead_letters',
        pg_catalog.jsonb_build_object(
            'queue', q.queue_name, 'msg_id', p_msg_id, 'message', msg,
            'error', pg_catalog.left(coalesce(nullif(p_error, ''), 'no reason given'), 4000), 'attempts', rc,
            'failed_at', pg_catalog.to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'sender', hdr->>'sender', 'dead_lettered_by', caller),
        pg_catalog.jsonb_build_object('sender', hdr->>'sender', 'dead_letter_of', q.queue_name,
                                      'dead_letter_msg_id', p_msg_id, 'original_headers', hdr));
    RETURN 'dead_lettered';
END;
$$;
COMMENT ON FUNCTION bus._bury(name, text, bigint, int, text) IS
    'Internal: moves a held message to dead_letters with its recorded sender (the only way in).';
REVOKE EXECUTE ON FUNCTION bus._bury(name, text, bigint, int, text) FROM PUBLIC;

-- Move a held message to the dead-letter queue now (malformed or poison), atomically and fenced.
CREATE OR REPLACE FUNCTION bus.dead_letter(p_queue text, p_msg_id bigint, p_read_ct int, p_error text)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bus._bury(current_user, p_queue, p_msg_id, p_read_ct, p_error) $$;
COMMENT ON FUNCTION bus.dead_letter(text, bigint, int, text) IS
    'Moves a held message to dead_letters with the reason, in one transaction; fenced like ack; consumers only.';

-- bus.fail for caller P_CALLER (see bus.fail): the backoff is written by the bus owner, because
-- consumers may not change a message's headers (they could forge its recorded sender).
CREATE OR REPLACE FUNCTION bus._fail(p_caller name, p_queue text, p_msg_id bigint, p_read_ct int, p_error text,
                                     p_max_attempts int, p_backoff_s double precision)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := bus._caller(p_caller);
    q      bus.queues := bus._queue(p_queue);
    maxa   int;
    delay  double precision;
    id     bigint;
BEGIN
    PERFORM bus._require_consumer(caller, q, 'fail');
    maxa := coalesce(p_max_attempts, bus._max_attempts(q.kind));
    IF p_read_ct >= maxa THEN
        RETURN bus._bury(caller, q.queue_name, p_msg_id, p_read_ct,
                         pg_catalog.format('failed %s times (max_attempts %s); last error: %s', p_read_ct, maxa, p_error));
    END IF;
    -- exponential backoff with jitter, capped at 5 minutes
    delay := least(p_backoff_s * pg_catalog.power(2, greatest(p_read_ct - 1, 0)), 300) * (0.75 + pg_catalog.random() * 0.5);
    EXECUTE pg_catalog.format($q$UPDATE pgmq.%I
                        SET vt = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $3),
                            headers = coalesce(headers, '{}'::jsonb)
                                      || pg_catalog.jsonb_build_object('last_error', pg_catalog.left($4, 4000), 'attempts', read_ct)
                      WHERE msg_id = $1 AND read_ct = $2 RETURNING msg_id$q$, 'q_' || q.queue_name)
    INTO id USING p_msg_id, p_read_ct, delay, p_error;
    RETURN CASE WHEN id IS NOT NULL THEN 'retry' ELSE bus._why_not(q.queue_name, p_msg_id) END;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus._fail(name, text, bigint, int, text, int, double precision) FROM PUBLIC;

-- A processing failure: retry after a backoff, or dead-letter once attempts reach the kind's max.
CREATE OR REPLACE FUNCTION bus.fail(p_queue text, p_msg_id bigint, p_read_ct int, p_error text,
                                    p_max_attempts int DEFAULT NULL, p_backoff_s double precision DEFAULT 1)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bus._fail(current_user, p_queue, p_msg_id, p_read_ct, p_error, p_max_attempts, p_backoff_s) $$;
COMMENT ON FUNCTION bus.fail(text, bigint, int, text, int, double precision) IS
    'Records a failed attempt: backoff via vt, or dead_letters after max_attempts; fenced like ack; consumers only.';

-- bus.give_back for caller P_CALLER: fenced like set_lease, and counts the hand-back in
-- headers.released (written by the bus owner: consumers may not change headers).
CREATE OR REPLACE FUNCTION bus._give_back(p_caller name, p_queue text, p_msg_id bigint, p_read_ct int,
                                          p_seconds double precision)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := bus._caller(p_caller);
    q      bus.queues := bus._queue(p_queue);
    id     bigint;
BEGIN
    PERFORM bus._require_consumer(caller, q, 'give back');
    IF p_seconds IS NULL OR p_seconds < 0 THEN
        RAISE EXCEPTION 'give-back seconds must be >= 0, got %', p_seconds
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 0 to hand a message back for immediate redelivery.';
    END IF;
    EXECUTE pg_catalog.format($q$UPDATE pgmq.%I
                        SET vt = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $3),
                            headers = coalesce(headers, '{}'::jsonb) || pg_catalog.jsonb_build_object(
                                'released', coalesce((headers->>'released')::int, 0) + 1)
                      WHERE msg_id = $1 AND read_ct = $2 RETURNING msg_id$q$, 'q_' || q.queue_name)
    INTO id USING p_msg_id, p_read_ct, p_seconds;
    RETURN CASE WHEN id IS NOT NULL THEN 'ok' ELSE bus._why_not(q.queue_name, p_msg_id) END;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus._give_back(name, text, bigint, int, double precision) FROM PUBLIC;

-- Hand a held message back without it counting as an attempt: the consumer is shutting down, lost
-- the database mid-way, or another worker is busy with the same request. Redelivered after
-- P_SECONDS (0: at once). 'ok', or 'stale' / 'gone' like ack.
CREATE OR REPLACE FUNCTION bus.give_back(p_queue text, p_msg_id bigint, p_read_ct int, p_seconds double precision DEFAULT 0)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bus._give_back(current_user, p_queue, p_msg_id, p_read_ct, p_seconds) $$;
COMMENT ON FUNCTION bus.give_back(text, bigint, int, double precision) IS
    'Hands a held message back (shutdown, database lost, busy elsewhere) without counting an attempt.';

-- Attempts a message of kind P_KIND gets before it is dead-lettered: the kind's max_attempts, or
-- the operator's override (bus setting max_attempts, from SHARED_QUEUE_MAX_ATTEMPTS).
CREATE OR REPLACE FUNCTION bus._max_attempts(p_kind text)
RETURNS int
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN coalesce(nullif(bus.setting('max_attempts'), '')::int,
                (SELECT k.max_attempts FROM bus.queue_kinds k WHERE k.kind = p_kind));

-- Read up to P_QTY visible messages of P_QUEUE for P_VT seconds, as pgmq.read does (the caller's
-- own privileges: the flow table applies), except that a message delivered more than its
-- max_attempts times without being acked, failed or given back (its consumer crashed on it, or
-- could not even decode it) is moved to dead_letters instead of being delivered again. Deliveries
-- handed back with bus.give_back (headers.released) do not count. Headers always carry the
-- request hash (messages sent before the bus stamped it get it computed here).
CREATE OR REPLACE FUNCTION bus.read(p_queue text, p_vt int, p_qty int, p_conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q    bus.queues := bus._queue(p_queue);
    maxa int := bus._max_attempts(q.kind);
    r    pgmq.message_record;
BEGIN
    FOR r IN SELECT * FROM pgmq.read(q.queue_name, p_vt, p_qty, coalesce(p_conditional, '{}'::jsonb)) LOOP
        IF r.read_ct - coalesce((r.headers->>'released')::int, 0) > maxa THEN
            PERFORM bus._bury(current_user, q.queue_name, r.msg_id, r.read_ct,
                              pg_catalog.format('delivered %s times without being acked or failed (max_attempts %s): '
                                                'the consumer crashed on it or could not decode it',
                                                r.read_ct - coalesce((r.headers->>'released')::int, 0), maxa));
            CONTINUE;
        END IF;
        IF r.headers IS NULL OR NOT r.headers ? 'content_sha256' THEN
            r.headers := coalesce(r.headers, '{}'::jsonb) || pg_catalog.jsonb_build_object('content_sha256', ops.request_hash(r.message));
        END IF;
        RETURN NEXT r;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION bus.read(text, int, int, jsonb) IS
    'pgmq.read that dead-letters messages delivered past max_attempts without being settled (poison).';
