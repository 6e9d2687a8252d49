-- An agent's requests over the bus and their results (orchestrator.agent.AgentClient): the request is
-- recorded before it is published, with the hash of what it asks; a result is stored before it is
-- acked, only once, and only if it answers that request (DESIGN.md 8b: a dedupe by request id
-- compares what was asked, so a result for other content is never taken as this request's answer).

-- Record request P_REQUEST (already stamped with its id) of agent P_AGENT_ID; returns its hash.
-- 23505 when this instance already used the id (an agent never reuses one).
CREATE OR REPLACE FUNCTION core.record_request(p_request_id text, p_agent_id text, p_kind text, p_request jsonb,
                                               p_reply_to text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sha text := ops.request_hash(p_request);
BEGIN
    INSERT INTO core.agent_results (request_id, agent_id, kind, request, reply_to, request_sha256)
    VALUES (p_request_id, p_agent_id, p_kind, p_request, p_reply_to, sha);
    RETURN sha;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'request id % is already used in instance %', p_request_id, core.instance_id()
        USING ERRCODE = 'unique_violation', HINT = 'Leave "id" out and a new one is assigned.';
END;
$$;
COMMENT ON FUNCTION core.record_request(text, text, text, jsonb, text) IS
    'Records an agent''s request (with the hash of what it asks) before it is published.';

-- Store result P_RESULT for request P_REQUEST_ID: 'stored'; 'already' when a result is stored (the
-- first one wins); 'conflict' when the result answers other content (its request_sha256 is not the
-- request's hash: nothing is stored); 'unknown' when no such request was recorded here.
CREATE OR REPLACE FUNCTION core.store_result(p_request_id text, p_result jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r core.agent_results;
BEGIN
    SELECT * INTO r FROM core.agent_results a WHERE a.request_id = p_request_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'unknown';
    ELSIF r.result IS NOT NULL THEN
        RETURN 'already';
    ELSIF p_result ? 'request_sha256' AND r.request_sha256 IS NOT NULL
          AND p_result->>'request_sha256' IS DISTINCT FROM r.request_sha256 THEN
        RETURN 'conflict';
    END IF;
    UPDATE core.agent_results a SET result = p_result, completed_at = now() WHERE a.request_id = p_request_id;
    RETURN 'stored';
END;
$$;
COMMENT ON FUNCTION core.store_result(text, jsonb) IS
    'Stores a result once, only if it answers the recorded request (request_sha256); says what happened.';
