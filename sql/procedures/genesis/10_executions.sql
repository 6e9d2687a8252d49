-- Execution bookkeeping for the genesis worker (svc_genesis): limits a request may only lower,
-- claiming a request id (finished -> stored result, running elsewhere -> busy, crashed -> run again),
-- and recording the outcome once.

-- The limits for one job: each requested value capped at the operator maximum; defaults for the rest.
CREATE OR REPLACE FUNCTION genesis.effective_limits(p_requested jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    req jsonb := coalesce(p_requested, '{}');
    bad text;
    out jsonb := '{}';
    l genesis.limits;
    v numeric;
BEGIN
    IF jsonb_typeof(req) <> 'object' THEN
        RAISE EXCEPTION 'limits must be a JSON object, got %', jsonb_typeof(req) USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO bad FROM jsonb_object_keys(req) k
     WHERE NOT EXISTS (SELECT 1 FROM genesis.limits x WHERE x.name = k);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown limit(s): %', bad
            USING ERRCODE = '22023', HINT = 'known: ' || (SELECT string_agg(name, ', ' ORDER BY name) FROM genesis.limits);
    END IF;
    FOR l IN SELECT * FROM genesis.limits ORDER BY name LOOP
        IF req ? l.name AND jsonb_typeof(req -> l.name) <> 'null' THEN
            IF jsonb_typeof(req -> l.name) <> 'number' OR (req ->> l.name)::numeric <= 0 THEN
                RAISE EXCEPTION 'limit % must be a positive number, got %', l.name, req -> l.name USING ERRCODE = '22023';
            END IF;
            v := least((req ->> l.name)::numeric, l.max_value);
        ELSE
            v := l.default_value;
        END IF;
        out := out || jsonb_build_object(l.name, v);
    END LOOP;
    RETURN out;
END;
$$;
COMMENT ON FUNCTION genesis.effective_limits(jsonb) IS 'Requested limits capped at the operator maxima, defaults for the rest (22023 on bad input).';

-- Claim REQUEST_ID for a run. Returns {action: run|done|busy|conflict, ...}: done carries the stored
-- result, busy the time another live worker's lease ends, conflict why the id cannot be used; run is
-- returned for a new id or a crashed worker's. The same id from another sender, or with other content
-- (P_SHA256, the bus's hash of the request), is a conflict: never the stored result of someone else's
-- code (DESIGN.md 8b). Rows from before hashes were kept compare the code's hash and language/mode.
CREATE OR REPLACE FUNCTION genesis.start_execution(p_request_id text, p_agent_id text, p_language text, p_mode text,
                                                   p_code_sha256 text, p_limits jsonb, p_worker text,
                                                   p_lease_s double precision, p_sender text DEFAULT NULL,
                                                   p_sha256 text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e genesis.executions;
    lease timestamptz := now() + make_interval(secs => greatest(p_lease_s, 1));
BEGIN
    IF coalesce(p_request_id, '') = '' THEN
        RAISE EXCEPTION 'request id is required' USING ERRCODE = '22023';
    END IF;
    INSERT INTO genesis.executions (request_id, agent_id, language, mode, code_sha256, limits, worker, lease_until,
                                    sender, request_sha256)
    VALUES (p_request_id, p_agent_id, p_language, p_mode, p_code_sha256, coalesce(p_limits, '{}'), p_worker, lease,
            p_sender, p_sha256)
    ON CONFLICT (request_id) DO NOTHING;
    IF FOUND THEN
        RETURN jsonb_build_object('action', 'run', 'runs', 1);
    END IF;
    SELECT * INTO e FROM genesis.executions x WHERE x.request_id = p_request_id FOR UPDATE;
    IF e.sender IS DISTINCT FROM p_sender AND e.sender IS NOT NULL AND p_sender IS NOT NULL THEN
        RETURN jsonb_build_object('action', 'conflict', 'reason',
            format('request id %s was already used by another sender; send the job again with a new id '
                   '(leave "id" out and the bus assigns one)', p_request_id));
    END IF;
    IF (CASE WHEN e.request_sha256 IS NOT NULL AND p_sha256 IS NOT NULL THEN e.request_sha256 <> p_sha256
             ELSE e.code_sha256 IS DISTINCT FROM p_code_sha256 OR e.language IS DISTINCT FROM p_language
                  OR e.mode IS DISTINCT FROM p_mode END) THEN
        RETURN jsonb_build_object('action', 'conflict', 'reason',
            format('request id %s was already used for a different job; send this one with a new id '
                   '(leave "id" out and the bus assigns one)', p_request_id));
    END IF;
    IF e.status = 'finished' THEN
        RETURN jsonb_build_object('action', 'done', 'result', e.result);
    END IF;
    IF e.lease_until > now() THEN
        RETURN jsonb_build_object('action', 'busy', 'until', e.lease_until, 'worker', e.worker);
    END IF;
    UPDATE genesis.executions SET runs = runs + 1, worker = p_worker, started_at = now(), lease_until = lease
     WHERE request_id = p_request_id;
    RETURN jsonb_build_object('action', 'run', 'runs', e.runs + 1);
END;
$$;
COMMENT ON FUNCTION genesis.start_execution(text, text, text, text, text, jsonb, text, double precision, text, text) IS
    'Claim a request id: run (new, or its worker died), done (stored result), busy (held elsewhere) or conflict (id reused).';

-- The worker's one call per delivery: the effective limits of the request, and the claim on its id
-- with a lease of the job's timeout + LEASE_MARGIN_S. Returns start_execution's answer plus limits.
CREATE OR REPLACE FUNCTION genesis.claim(p_request_id text, p_agent_id text, p_language text, p_mode text,
                                         p_code_sha256 text, p_requested jsonb, p_worker text,
                                         p_lease_margin_s double precision, p_sender text DEFAULT NULL,
                                         p_sha256 text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim jsonb := genesis.effective_limits(p_requested);
BEGIN
    RETURN genesis.start_execution(p_request_id, p_agent_id, p_language, p_mode, p_code_sha256, lim, p_worker,
                                   (lim ->> 'timeout_s')::double precision + p_lease_margin_s, p_sender, p_sha256)
           || jsonb_build_object('limits', lim);
END;
$$;
COMMENT ON FUNCTION genesis.claim(text, text, text, text, text, jsonb, text, double precision, text, text) IS
    'Effective limits + start_execution in one round trip (22023 on bad limits, nothing recorded).';

-- Record the outcome of REQUEST_ID once; returns the stored result (the first one wins, so a
-- duplicate run that finishes later publishes the same answer).
CREATE OR REPLACE FUNCTION genesis.finish_execution(p_request_id text, p_result jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stored jsonb;
BEGIN
    IF p_result IS NULL OR jsonb_typeof(p_result) <> 'object' THEN
        RAISE EXCEPTION 'result must be a JSON object' USING ERRCODE = '22023';
    END IF;
    UPDATE genesis.executions SET status = 'finished', finished_at = now(), result = p_result,
           exit_code = (p_result ->> 'exit_code')::int, stdout = p_result ->> 'stdout', stderr = p_result ->> 'stderr',
           error = p_result ->> 'error', killed_reason = p_result ->> 'killed_reason',
           exceeded = p_result ->> 'exceeded', truncated = coalesce((p_result ->> 'truncated')::boolean, false),
           duration_ms = (p_result ->> 'duration_ms')::numeric, peak_memory_kb = (p_result ->> 'peak_memory_kb')::bigint
     WHERE request_id = p_request_id AND status = 'running'
    RETURNING result INTO stored;
    IF stored IS NULL THEN
        SELECT result INTO stored FROM genesis.executions WHERE request_id = p_request_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no execution % was started', p_request_id
                USING ERRCODE = 'P0002', HINT = 'call genesis.start_execution first';
        END IF;
    END IF;
    RETURN stored;
END;
$$;
COMMENT ON FUNCTION genesis.finish_execution(text, jsonb) IS 'Store the result of a run once; returns the stored result.';

-- Operator: set a limit's default and maximum (`orchestrator genesis limits set`).
CREATE OR REPLACE FUNCTION genesis.set_limit(p_name text, p_default numeric, p_max numeric)
RETURNS genesis.limits
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r genesis.limits;
BEGIN
    IF p_default IS NULL OR p_max IS NULL OR p_default <= 0 OR p_default > p_max THEN
        RAISE EXCEPTION 'need 0 < default (%) <= max (%) for limit %', p_default, p_max, p_name USING ERRCODE = '22023';
    END IF;
    UPDATE genesis.limits SET default_value = p_default, max_value = p_max WHERE name = p_name RETURNING * INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown limit %', p_name
            USING ERRCODE = '22023', HINT = 'known: ' || (SELECT string_agg(name, ', ' ORDER BY name) FROM genesis.limits);
    END IF;
    RETURN r;
END;
$$;
COMMENT ON FUNCTION genesis.set_limit(text, numeric, numeric) IS 'Operator: change a limit''s default and maximum.';

CREATE OR REPLACE VIEW genesis.recent_executions AS
SELECT request_id, agent_id, language, mode, status, runs, exit_code, killed_reason, exceeded, truncated,
       duration_ms, peak_memory_kb, started_at, finished_at, left(error, 120) AS error
  FROM genesis.executions ORDER BY started_at DESC;
COMMENT ON VIEW genesis.recent_executions IS 'Executions, newest first (`orchestrator genesis list`).';
