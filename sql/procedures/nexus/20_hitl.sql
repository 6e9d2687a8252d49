-- Human in the loop: approvals and questions held for people. The hitl worker claims request
-- messages (long visibility timeout, kept alive) and records them here keyed by the request id,
-- so a redelivery after a crash finds the same item (and its votes) and never decides twice.

-- Record (or re-attach after a redelivery) a request held by delivery (msg_id, read_ct).
-- Returns the item's status: 'pending', or 'decided'/'published' when it only needs (re)publishing,
-- or 'conflict' when the id is already held for another request: another sender (P_SENDER, the
-- bus's headers.sender) or other content (P_SHA256, the bus's hash of the request). A conflict
-- changes nothing: the caller answers that delivery with an error, never with the held item's
-- decision (DESIGN.md 8b: reusing an approved request's id must not approve another diff).
CREATE OR REPLACE FUNCTION nexus.hitl_claim(p_kind text, p_queue text, p_msg_id bigint, p_read_ct int,
                                            p_lease_s double precision, p_payload jsonb, p_reply_to text,
                                            p_default_timeout_s double precision, p_sender text DEFAULT NULL,
                                            p_sha256 text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st  text;
    t   double precision;
    i   nexus.hitl_items;
    sha text := coalesce(p_sha256, ops.request_hash(p_payload));
BEGIN
    IF p_payload->>'id' IS NULL THEN
        RAISE EXCEPTION 'hitl request on % msg % has no id', p_queue, p_msg_id USING ERRCODE = '22023';
    END IF;
    SELECT * INTO i FROM nexus.hitl_items x WHERE x.request_id = p_payload->>'id' FOR UPDATE;
    IF FOUND THEN
        IF i.kind <> p_kind OR (i.sender IS DISTINCT FROM p_sender AND i.sender IS NOT NULL AND p_sender IS NOT NULL)
           OR coalesce(i.request_sha256, ops.request_hash(i.payload)) <> sha THEN
            RETURN 'conflict';
        END IF;
        UPDATE nexus.hitl_items x SET queue = p_queue, msg_id = p_msg_id, read_ct = p_read_ct,
               lease_until = now() + make_interval(secs => p_lease_s),
               -- a request that was already published and arrives again (re-sent) is answered again
               status = CASE WHEN x.status = 'published' THEN 'decided' ELSE x.status END
         WHERE x.request_id = i.request_id
        RETURNING x.status INTO st;
        RETURN st;
    END IF;
    t := CASE WHEN p_kind = 'approval' THEN coalesce((p_payload->>'timeout_s')::double precision, p_default_timeout_s) END;
    INSERT INTO nexus.hitl_items AS x (request_id, kind, queue, msg_id, read_ct, lease_until, reply_to, agent_id,
                                       payload, quorum, deadline, sender, request_sha256)
    VALUES (p_payload->>'id', p_kind, p_queue, p_msg_id, p_read_ct, now() + make_interval(secs => p_lease_s),
            p_reply_to, coalesce(p_payload->>'agent_id', '?'), p_payload,
            greatest(1, coalesce((p_payload->>'quorum')::int, 1)),
            CASE WHEN t IS NOT NULL AND t > 0 THEN now() + make_interval(secs => t) END, p_sender, sha)
    RETURNING x.status INTO st;
    RETURN st;
END;
$$;
COMMENT ON FUNCTION nexus.hitl_claim(text, text, bigint, int, double precision, jsonb, text, double precision, text, text) IS
    'Records a held approval/question delivery keyed by request id (idempotent on redelivery; conflict on id reuse).';

-- The error answer to a delivery whose request id is held for another request (nexus.hitl_claim
-- returned 'conflict'): an approval is not approved, a question gets no answer, and both say why.
CREATE OR REPLACE FUNCTION nexus.hitl_conflict_response(p_kind text, p_request_id text, p_sha256 text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('request_id', p_request_id, 'request_sha256', p_sha256,
               'error', format('request id %s is already used for a different %s (or by another sender); nothing was '
                               'shown to a person. Send the request again with a new id (leave "id" out and the bus '
                               'assigns one).', p_request_id, p_kind))
        || CASE WHEN p_kind = 'approval'
                THEN jsonb_build_object('approved', false, 'decided_by', 'nexus:conflict', 'comment', 'request id reused')
                ELSE jsonb_build_object('response', '', 'answered_by', 'nexus:conflict') END;
$$;
COMMENT ON FUNCTION nexus.hitl_conflict_response(text, text, text) IS 'The error response to a reused approval/question id.';

-- Deliveries whose lease ends within P_WITHIN_S (the worker extends them with bus.set_lease).
CREATE OR REPLACE FUNCTION nexus.hitl_leases_due(p_within_s double precision)
RETURNS TABLE (request_id text, queue text, msg_id bigint, read_ct int)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.request_id, i.queue, i.msg_id, i.read_ct FROM nexus.hitl_items i
     WHERE i.status <> 'published' AND i.lease_until < now() + make_interval(secs => p_within_s)
     ORDER BY i.lease_until;
$$;
COMMENT ON FUNCTION nexus.hitl_leases_due(double precision) IS 'Held deliveries whose lease ends soon.';

CREATE OR REPLACE FUNCTION nexus.hitl_leased(p_request_id text, p_read_ct int, p_lease_s double precision)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE nexus.hitl_items SET lease_until = now() + make_interval(secs => p_lease_s)
     WHERE request_id = p_request_id AND read_ct = p_read_ct;
$$;
COMMENT ON FUNCTION nexus.hitl_leased(text, int, double precision) IS 'Records that a delivery''s lease was extended.';

-- The response message of a decided item.
CREATE OR REPLACE FUNCTION nexus._hitl_response(i nexus.hitl_items, p_approved boolean, p_text text, p_by text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN i.kind = 'approval'
                THEN jsonb_build_object('request_id', i.request_id, 'approved', p_approved, 'comment', p_text, 'decided_by', p_by)
                ELSE jsonb_build_object('request_id', i.request_id, 'response', p_text, 'answered_by', p_by) END
           -- what was decided (the agent checks it against the request it stored), the request's msg_id
           -- (a client that sent no id matches by it) and the asking agent
           || jsonb_strip_nulls(jsonb_build_object('request_sha256', i.request_sha256, 'request_msg_id', i.msg_id,
                                                   'agent_id', nullif(i.agent_id, '?')));
$$;

-- A person's vote or answer. Approvals are decided when approvals or rejections reach the quorum
-- (M of N; default 1); questions by the first answer. Returns {status, decision?}: status is
-- 'decided', 'recorded' (waiting for more votes), 'already_voted', 'already_decided' or 'not_found'.
CREATE OR REPLACE FUNCTION nexus.hitl_decide(p_request_id text, p_user text, p_approved boolean, p_response text,
                                             p_comment text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i    nexus.hitl_items;
    n    int;
    yes  int;
    no_  int;
    resp jsonb;
    opts jsonb;
BEGIN
    SELECT * INTO i FROM nexus.hitl_items WHERE request_id = p_request_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'not_found');
    END IF;
    IF i.status <> 'pending' THEN
        RETURN jsonb_build_object('status', 'already_decided', 'decision', i.decision);
    END IF;
    IF i.kind = 'approval' AND p_approved IS NULL THEN
        RAISE EXCEPTION 'an approval needs approve or reject' USING ERRCODE = '22023';
    END IF;
    IF i.kind = 'question' THEN
        opts := i.payload->'options';
        IF coalesce(p_response, '') = '' THEN
            RAISE EXCEPTION 'an answer is required' USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(opts) = 'array' AND jsonb_array_length(opts) > 0
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(opts) o WHERE o #>> '{}' = p_response) THEN
            RAISE EXCEPTION 'answer % is not one of the options %', p_response, opts USING ERRCODE = '22023';
        END IF;
    END IF;
    INSERT INTO nexus.hitl_decisions (request_id, decided_by, approved, response, comment)
    VALUES (p_request_id, p_user, p_approved, p_response, nullif(p_comment, ''))
    ON CONFLICT (request_id, decided_by) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN jsonb_build_object('status', 'already_voted');
    END IF;
    IF i.kind = 'question' THEN
        resp := nexus._hitl_response(i, NULL, p_response, p_user);
    ELSE
        SELECT count(*) FILTER (WHERE approved), count(*) FILTER (WHERE NOT approved) INTO yes, no_
          FROM nexus.hitl_decisions WHERE request_id = p_request_id;
        IF yes < i.quorum AND no_ < i.quorum THEN
            RETURN jsonb_build_object('status', 'recorded', 'approvals', yes, 'rejections', no_, 'quorum', i.quorum);
        END IF;
        SELECT nexus._hitl_response(i, yes >= i.quorum,
                   nullif(string_agg(d.decided_by || ': ' || d.comment, '; ' ORDER BY d.id) FILTER (WHERE d.comment IS NOT NULL), ''),
                   string_agg(d.decided_by, ',' ORDER BY d.id))
          INTO resp
          FROM nexus.hitl_decisions d WHERE d.request_id = p_request_id AND d.approved = (yes >= i.quorum);
    END IF;
    UPDATE nexus.hitl_items SET status = 'decided', decision = resp, decided_at = now() WHERE request_id = p_request_id;
    RETURN jsonb_build_object('status', 'decided', 'decision', resp);
END;
$$;
COMMENT ON FUNCTION nexus.hitl_decide(text, text, boolean, text, text) IS
    'Records a vote or answer; decides the item when the quorum is reached. Never decides an item twice.';

-- Automatic deny of approvals nobody decided before their deadline; returns how many.
CREATE OR REPLACE FUNCTION nexus.hitl_expire()
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    WITH due AS (
        SELECT * FROM nexus.hitl_items
         WHERE status = 'pending' AND kind = 'approval' AND deadline < now()
         FOR UPDATE SKIP LOCKED
    ), votes AS (
        INSERT INTO nexus.hitl_decisions (request_id, decided_by, approved, comment)
        SELECT request_id, 'nexus:timeout', false,
               format('no decision within %s s: denied automatically', round(extract(epoch FROM deadline - created_at)))
          FROM due
        ON CONFLICT (request_id, decided_by) DO NOTHING
        RETURNING request_id, comment
    )
    UPDATE nexus.hitl_items i
       SET status = 'decided', decided_at = now(),
           decision = nexus._hitl_response(i, false, v.comment, 'nexus:timeout')
      FROM votes v WHERE i.request_id = v.request_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION nexus.hitl_expire() IS 'Denies pending approvals past their deadline (decided_by nexus:timeout).';

-- Decided items whose response still has to be published (with the delivery that holds the request).
CREATE OR REPLACE FUNCTION nexus.hitl_to_publish(p_request_id text DEFAULT NULL)
RETURNS TABLE (request_id text, kind text, queue text, msg_id bigint, read_ct int, reply_to text, decision jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.request_id, i.kind, i.queue, i.msg_id, i.read_ct, i.reply_to, i.decision FROM nexus.hitl_items i
     WHERE i.status = 'decided' AND (p_request_id IS NULL OR i.request_id = p_request_id)
     ORDER BY i.decided_at;
$$;
COMMENT ON FUNCTION nexus.hitl_to_publish(text) IS 'Decided items whose response is not yet published.';

CREATE OR REPLACE FUNCTION nexus.hitl_published(p_request_id text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE nexus.hitl_items SET status = 'published', published_at = now()
     WHERE request_id = p_request_id AND status = 'decided';
$$;
COMMENT ON FUNCTION nexus.hitl_published(text) IS 'Marks a decided item as published on the bus.';

-- What the page lists: pending items of a kind with their votes so far, oldest first.
CREATE OR REPLACE FUNCTION nexus.hitl_pending(p_kind text, p_limit int DEFAULT 200)
RETURNS TABLE (request_id text, agent_id text, payload jsonb, quorum int, deadline timestamptz,
               created_at timestamptz, votes jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.request_id, i.agent_id, i.payload, i.quorum, i.deadline, i.created_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object('by', d.decided_by, 'approved', d.approved, 'comment', d.comment)
                                      ORDER BY d.id)
                       FROM nexus.hitl_decisions d WHERE d.request_id = i.request_id), '[]'::jsonb)
      FROM nexus.hitl_items i
     WHERE i.status = 'pending' AND i.kind = p_kind
     ORDER BY i.created_at, i.request_id
     LIMIT p_limit;
$$;
COMMENT ON FUNCTION nexus.hitl_pending(text, int) IS 'Pending approvals or questions with the votes so far.';

CREATE OR REPLACE VIEW nexus.hitl_recent AS
SELECT request_id, kind, agent_id, status, decision, created_at, decided_at, published_at
  FROM nexus.hitl_items WHERE status <> 'pending' ORDER BY decided_at DESC NULLS LAST LIMIT 50;
COMMENT ON VIEW nexus.hitl_recent IS 'The last 50 decided approvals and questions.';

CREATE OR REPLACE VIEW nexus.hitl_counts AS
SELECT kind, status, count(*) AS items FROM nexus.hitl_items GROUP BY 1, 2;
COMMENT ON VIEW nexus.hitl_counts IS 'HITL items per kind and status.';
