-- The NATS bridge's ledger (seed 001, "Migration from NATS"; docs/nats.md). The bridge takes a NATS
-- request in one transaction: nats.claim (the ledger row, or the earlier one), the normal pgmq send
-- as the bridge's own role (the validation trigger stamps and checks it like any sender's), then
-- nats.enqueued. A refused message is recorded by nats.reject with the reason. Results reaching
-- the bridge's reply queues are routed back with nats.reply_for and settled with nats.answered.
-- The ledger is the operator's; the bridge role calls these definers (granted by nats.ensure_bridge).

-- Register bridge P_ID (LOGIN role P_ROLE): an identity in bus.instances flagged bridge, its reply
-- queues, and EXECUTE on the bridge's functions. Idempotent; the operator's (orchestrator nats).
CREATE OR REPLACE FUNCTION nats.ensure_bridge(p_id text, p_role name)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM bus.instances i WHERE i.instance_id = p_id AND NOT i.bridge) THEN
        RAISE EXCEPTION 'instance "%" is a Singularity instance, not a bridge', p_id
            USING ERRCODE = 'unique_violation', HINT = 'Give the bridge an id of its own.';
    END IF;
    INSERT INTO bus.instances (instance_id, role, bridge) VALUES (p_id, p_role, true)
    ON CONFLICT (instance_id) DO UPDATE SET role = EXCLUDED.role;
    RETURN QUERY SELECT * FROM bus.ensure_instance(p_id, p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA nats TO %I', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION nats.claim(text, text, text, text, text, jsonb, timestamptz),
                    nats.enqueued(text, text, text, bigint), nats.reject(text, text, text, text, text, text, text, jsonb),
                    nats.reply_for(text, text), nats.answered(text, text, text, bigint), nats.phase(),
                    nats.reply_queue(text) TO %I', p_role);
END;
$$;
COMMENT ON FUNCTION nats.ensure_bridge(text, name) IS 'Registers the NATS bridge''s identity and reply queues (idempotent).';

-- The caller's bridge id (42501 when the session may not act as a bridge's role). EXECUTE on the
-- functions below is granted to bridge roles only; this names which bridge (the session's own role
-- first: a superuser's SET ROLE in tests may act as any).
CREATE OR REPLACE FUNCTION nats._bridge()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b text;
BEGIN
    SELECT i.instance_id INTO b FROM bus.instances i
     WHERE i.bridge AND pg_catalog.pg_has_role(session_user, i.role, 'MEMBER')
     ORDER BY i.role = session_user DESC, i.instance_id LIMIT 1;
    IF b IS NULL THEN
        RAISE EXCEPTION 'role % is not a NATS bridge', session_user
            USING ERRCODE = 'insufficient_privilege', HINT = 'Only the bridge role (orchestrator nats) uses the ledger.';
    END IF;
    RETURN b;
END;
$$;

-- The phase now: 1 both active, 2 cutover, 3 retired.
CREATE OR REPLACE FUNCTION nats.phase()
RETURNS int
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT s.phase FROM nats.state s $$;
COMMENT ON FUNCTION nats.phase() IS 'The NATS migration phase (1 both active, 2 cutover, 3 retired).';

-- The calling bridge's reply queue for results of request queue P_QUEUE (e.g. llm_results_nats).
CREATE OR REPLACE FUNCTION nats.reply_queue(p_queue text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b  text := nats._bridge();
    rq text;
BEGIN
    SELECT q.queue_name INTO rq
      FROM nats.bridged_queues bq JOIN bus.queues q ON q.kind = bq.result_kind AND q.instance_id = b
     WHERE bq.queue = p_queue;
    IF rq IS NULL THEN
        RAISE EXCEPTION 'queue "%" is not bridged from NATS', left(p_queue, 60)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Bridged queues: ' || (SELECT string_agg(queue, ', ' ORDER BY queue) FROM nats.bridged_queues);
    END IF;
    RETURN rq;
END;
$$;
COMMENT ON FUNCTION nats.reply_queue(text) IS 'The bridge''s own reply queue for a bridged request queue.';

-- Take request P_KEY of P_QUEUE (from NATS subject P_SUBJECT, via core or jetstream): 'new' (a ledger
-- row now held by this transaction: send the message, then nats.enqueued), 'duplicate' (already taken:
-- a newer reply subject replaces an unanswered one's), 'answered', 'rejected' (taken before),
-- 'conflict' (the key was used for other content), or 'closed': phase 2 takes no new requests, only
-- what the JetStream stream stored before the cutover (P_STORED_AT, the stream's timestamp); phase 3
-- takes none. Concurrent takes of one key wait on the key: one is new, the other a duplicate.
CREATE OR REPLACE FUNCTION nats.claim(p_queue text, p_key text, p_subject text, p_via text, p_reply text,
                                      p_message jsonb, p_stored_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sha   text := ops.request_hash(p_message);
    st    nats.state;
    r     nats.requests;
BEGIN
    PERFORM nats._bridge();
    SELECT * INTO st FROM nats.state;
    SELECT * INTO r FROM nats.requests WHERE queue = p_queue AND request_key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        IF st.phase = 3 OR (st.phase = 2 AND (p_via = 'core' OR p_stored_at IS NULL OR p_stored_at > st.changed_at)) THEN
            RETURN jsonb_build_object('status', 'closed', 'phase', st.phase, 'since', st.changed_at);
        END IF;
        INSERT INTO nats.requests (queue, request_key, subject, via, status, reply_subject, content_sha256)
        VALUES (p_queue, p_key, p_subject, p_via, 'enqueued', p_reply, sha)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN jsonb_build_object('status', 'new');
        END IF;
        SELECT * INTO r FROM nats.requests WHERE queue = p_queue AND request_key = p_key FOR UPDATE;
    END IF;
    IF r.status = 'rejected' AND r.content_sha256 <> sha THEN
        -- refused before, now sent corrected under the same key: taken as new
        IF st.phase = 3 OR (st.phase = 2 AND (p_via = 'core' OR p_stored_at IS NULL OR p_stored_at > st.changed_at)) THEN
            RETURN jsonb_build_object('status', 'closed', 'phase', st.phase, 'since', st.changed_at);
        END IF;
        UPDATE nats.requests SET status = 'enqueued', subject = p_subject, via = p_via, reply_subject = p_reply,
                                 content_sha256 = sha, error = NULL, payload = NULL, received_at = now()
         WHERE queue = p_queue AND request_key = p_key;
        RETURN jsonb_build_object('status', 'new');
    END IF;
    IF r.content_sha256 <> sha THEN
        RETURN jsonb_build_object('status', 'conflict', 'request_id', r.request_id, 'received_at', r.received_at);
    END IF;
    UPDATE nats.requests SET duplicates = duplicates + 1,
           reply_subject = CASE WHEN status = 'enqueued' AND p_reply IS NOT NULL THEN p_reply ELSE reply_subject END
     WHERE queue = p_queue AND request_key = p_key;
    RETURN jsonb_build_object('status', CASE r.status WHEN 'enqueued' THEN 'duplicate' ELSE r.status END,
                              'request_id', r.request_id, 'msg_id', r.msg_id, 'error', r.error,
                              'received_at', r.received_at, 'answered_at', r.answered_at);
END;
$$;
COMMENT ON FUNCTION nats.claim(text, text, text, text, text, jsonb, timestamptz) IS
    'Takes a NATS request once by (queue, key): new, duplicate, answered, rejected, conflict (other content) or closed.';

-- The message claimed as P_KEY was sent: its bus id and pgmq msg_id (same transaction as the send).
CREATE OR REPLACE FUNCTION nats.enqueued(p_queue text, p_key text, p_request_id text, p_msg_id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM nats._bridge();
    UPDATE nats.requests SET request_id = p_request_id, msg_id = p_msg_id
     WHERE queue = p_queue AND request_key = p_key AND status = 'enqueued' AND msg_id IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no claimed NATS request % on %', left(p_key, 60), p_queue
            USING ERRCODE = 'no_data_found', HINT = 'Call nats.claim first, in the same transaction.';
    END IF;
END;
$$;
COMMENT ON FUNCTION nats.enqueued(text, text, text, bigint) IS 'Records the pgmq msg_id of a claimed NATS request.';

-- A NATS request the bus refused (or that is no JSON object): recorded with WHY and the payload, once.
-- P_MESSAGE: the payload as JSON when it is an object (its hash is then nats.claim's).
CREATE OR REPLACE FUNCTION nats.reject(p_queue text, p_key text, p_subject text, p_via text, p_reply text,
                                       p_payload text, p_error text, p_message jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM nats._bridge();
    INSERT INTO nats.requests (queue, request_key, subject, via, status, reply_subject, content_sha256, error, payload)
    VALUES (p_queue, p_key, p_subject, p_via, 'rejected', p_reply,
            CASE WHEN p_message IS NOT NULL THEN ops.request_hash(p_message)
                 ELSE encode(sha256(convert_to(coalesce(p_payload, ''), 'UTF8')), 'hex') END,
            left(p_error, 2000), p_payload)
    ON CONFLICT (queue, request_key) DO UPDATE SET duplicates = nats.requests.duplicates + 1
     WHERE nats.requests.status = 'rejected';
END;
$$;
COMMENT ON FUNCTION nats.reject(text, text, text, text, text, text, text, jsonb) IS
    'Records a refused NATS request with the reason and its payload (nothing from NATS is dropped silently).';

-- Where the result on reply queue P_RESULT_QUEUE for request P_REQUEST_ID goes: the ledger row.
CREATE OR REPLACE FUNCTION nats.reply_for(p_result_queue text, p_request_id text)
RETURNS TABLE (queue text, request_key text, via text, status text, reply_subject text, received_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.queue, r.request_key, r.via, r.status, r.reply_subject, r.received_at
      FROM bus.queues q
      JOIN nats.bridged_queues bq ON bq.result_kind = q.kind
      JOIN nats.requests r ON r.queue = bq.queue AND r.request_id = p_request_id
     WHERE q.queue_name = p_result_queue AND q.instance_id = nats._bridge();
$$;
COMMENT ON FUNCTION nats.reply_for(text, text) IS 'The ledger row a result on the bridge''s reply queue answers.';

-- The result (P_RESULT_QUEUE, P_RESULT_MSG_ID) answered request P_KEY: 'answered', or 'already'.
CREATE OR REPLACE FUNCTION nats.answered(p_queue text, p_key text, p_result_queue text, p_result_msg_id bigint)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM nats._bridge();
    UPDATE nats.requests SET status = 'answered', answered_at = now(), result_queue = p_result_queue,
                             result_msg_id = p_result_msg_id
     WHERE queue = p_queue AND request_key = p_key AND status = 'enqueued';
    RETURN CASE WHEN FOUND THEN 'answered' ELSE 'already' END;
END;
$$;
COMMENT ON FUNCTION nats.answered(text, text, text, bigint) IS 'Marks a bridged request answered (its result went back over NATS).';

-- The operator's: move to phase P (1, 2 or 3). Phase 3 (retired) is refused while bridged requests
-- wait for their answers: their replies still go back over NATS.
CREATE OR REPLACE FUNCTION nats.set_phase(p_phase int, p_note text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF p_phase NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION 'phase % does not exist', p_phase
            USING ERRCODE = 'invalid_parameter_value', HINT = '1 both active, 2 cutover, 3 retired (docs/nats.md).';
    END IF;
    IF p_phase = 3 THEN
        SELECT count(*) INTO n FROM nats.requests WHERE status = 'enqueued';
        IF n > 0 THEN
            RAISE EXCEPTION '% request(s) bridged from NATS still wait for their answer', n
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Stay in phase 2 until `orchestrator nats status` shows none pending.';
        END IF;
    END IF;
    UPDATE nats.state SET phase = p_phase, changed_at = now(), note = p_note;
    RETURN p_phase;
END;
$$;
COMMENT ON FUNCTION nats.set_phase(int, text) IS 'Sets the NATS migration phase; phase 3 only once nothing bridged is pending.';

-- Traffic per subject over the last P_DAYS days (every request the bridge took, by outcome).
CREATE OR REPLACE FUNCTION nats.traffic(p_days int DEFAULT 7)
RETURNS TABLE (subject text, queue text, via text, requests bigint, enqueued bigint, answered bigint,
               rejected bigint, duplicates bigint, pending bigint, last_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.subject, r.queue, r.via, count(*), count(*) FILTER (WHERE r.status <> 'rejected'),
           count(*) FILTER (WHERE r.status = 'answered'), count(*) FILTER (WHERE r.status = 'rejected'),
           coalesce(sum(r.duplicates), 0)::bigint, count(*) FILTER (WHERE r.status = 'enqueued'), max(r.received_at)
      FROM nats.requests r
     WHERE r.received_at > now() - make_interval(days => p_days)
     GROUP BY 1, 2, 3
     ORDER BY 1, 3;
$$;
COMMENT ON FUNCTION nats.traffic(int) IS 'NATS requests per subject over the last N days: enqueued, answered, rejected, duplicates, pending.';

-- Everything `orchestrator nats status` says from SQL: phase, pending bridged requests (of any age),
-- the oldest, and whether PostgreSQL still needs NATS (the stream's depth is asked of NATS itself).
CREATE OR REPLACE FUNCTION nats.status(p_days int DEFAULT 7)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'phase', (SELECT s.phase FROM nats.state s),
        'phase_since', (SELECT s.changed_at FROM nats.state s),
        'pending', (SELECT count(*) FROM nats.requests r WHERE r.status = 'enqueued'),
        'oldest_pending', (SELECT min(r.received_at) FROM nats.requests r WHERE r.status = 'enqueued'),
        'requests', (SELECT count(*) FROM nats.requests r WHERE r.received_at > now() - make_interval(days => p_days)),
        'last_request_at', (SELECT max(r.received_at) FROM nats.requests r),
        'days', p_days);
$$;
COMMENT ON FUNCTION nats.status(int) IS 'NATS migration status: phase, pending bridged requests, recent traffic.';

REVOKE EXECUTE ON FUNCTION nats.ensure_bridge(text, name), nats._bridge(), nats.phase(), nats.reply_queue(text),
    nats.claim(text, text, text, text, text, jsonb, timestamptz), nats.enqueued(text, text, text, bigint),
    nats.reject(text, text, text, text, text, text, text, jsonb), nats.reply_for(text, text),
    nats.answered(text, text, text, bigint), nats.set_phase(int, text), nats.traffic(int), nats.status(int)
    FROM PUBLIC;
