-- LLM routing: which models to try in which order, atomic budget admission, and settling the
-- real cost after the call. Called by the router worker (svc_nexus) through these functions only.

-- The models to try for a request, in order: the requested model (if configured) first, then the
-- task type's route, or the '*' route when the task type has none. Disabled providers are skipped.
-- (plpgsql, not sql: its plan is cached per session, which halves the router's time per call.)
CREATE OR REPLACE FUNCTION nexus.plan(p_task_type text, p_model text DEFAULT NULL)
RETURNS TABLE (pos int, model text, provider text, kind text, base_url text, api_key_env text,
               remote_model text, timeout_s double precision, max_retries int, backoff_ms int,
               cost_in_per_1k numeric, cost_out_per_1k numeric, max_tokens int)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    route_of text := CASE WHEN EXISTS (SELECT 1 FROM nexus.routes x WHERE x.task_type = p_task_type)
                          THEN p_task_type ELSE '*' END;
BEGIN
    RETURN QUERY
    WITH wanted AS (
        SELECT p_model AS m, 0 AS o WHERE p_model IS NOT NULL
        UNION ALL
        SELECT r.model, r.position FROM nexus.routes r WHERE r.task_type = route_of AND r.model IS DISTINCT FROM p_model
    )
    SELECT (row_number() OVER (ORDER BY w.o))::int, m.name, p.name, p.kind, p.base_url, p.api_key_env,
           m.remote_model, p.timeout_s, p.max_retries, p.backoff_ms, m.cost_in_per_1k, m.cost_out_per_1k, m.max_tokens
      FROM wanted w
      JOIN nexus.models m ON m.name = w.m
      JOIN nexus.providers p ON p.name = m.provider AND p.enabled
     ORDER BY w.o;
END;
$$;
COMMENT ON FUNCTION nexus.plan(text, text) IS 'Ordered models (with provider settings) to try for a task type; fallbacks follow position 1.';

-- The agent's effective budget: its own row, else the '*' row, else no limit.
CREATE OR REPLACE FUNCTION nexus._budget_of(p_agent_id text)
RETURNS nexus.budgets
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b nexus.budgets;
BEGIN
    SELECT * INTO b FROM nexus.budgets x WHERE x.agent_id IN (p_agent_id, '*') ORDER BY x.agent_id = '*' LIMIT 1;
    RETURN b;
END;
$$;
COMMENT ON FUNCTION nexus._budget_of(text) IS 'The budget row that applies to an agent (its own, else ''*''), or NULL.';

-- Admission: plan the request, estimate its worst-case cost over every candidate, and reserve it
-- against the agent's daily budget in ONE conditional UPDATE (concurrent requests serialise on the
-- usage row, so two can never overspend). Returns {admitted, reason?, candidates, est_tokens, est_cost}.
CREATE OR REPLACE FUNCTION nexus.admit(p_request_id text, p_agent_id text, p_task_type text, p_model text,
                                       p_prompt_chars int, p_max_tokens int DEFAULT NULL, p_sender text DEFAULT NULL,
                                       p_sha256 text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cands    jsonb;
    est_tok  bigint;
    est_cost numeric;
    lim      nexus.budgets;
    d        date := (now() AT TIME ZONE 'UTC')::date;
    ok       boolean;
    used     nexus.budget_usage;
    held     nexus.reservations;
    reason   text;
    prompt   int := greatest(1, coalesce(p_prompt_chars, 0) / 4);
BEGIN
    SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.pos), '[]'::jsonb),
           max(prompt + coalesce(p_max_tokens, p.max_tokens)),
           round(coalesce(max((prompt * p.cost_in_per_1k + coalesce(p_max_tokens, p.max_tokens) * p.cost_out_per_1k) / 1000), 0), 8)
      INTO cands, est_tok, est_cost
      FROM nexus.plan(p_task_type, p_model) p;
    IF jsonb_array_length(cands) = 0 THEN
        reason := format('no model configured for task_type %L (and no default route ''*''); '
                         'add one: orchestrator nexus routes set %s MODEL [FALLBACK...]', p_task_type, p_task_type);
        INSERT INTO nexus.llm_calls (request_id, agent_id, task_type, status, error)
        VALUES (p_request_id, p_agent_id, p_task_type, 'refused', reason);
        RETURN jsonb_build_object('admitted', false, 'reason', reason, 'candidates', cands);
    END IF;
    SELECT * INTO held FROM nexus.reservations r WHERE r.request_id = p_request_id;
    IF FOUND THEN
        IF (held.sender IS DISTINCT FROM p_sender AND held.sender IS NOT NULL AND p_sender IS NOT NULL)
           OR (held.request_sha256 IS DISTINCT FROM p_sha256 AND held.request_sha256 IS NOT NULL AND p_sha256 IS NOT NULL)
           OR held.agent_id IS DISTINCT FROM p_agent_id THEN
            -- the id of a request in flight, reused: it must not ride on that request's reservation
            reason := format('request id %s is already in use for a different request (or by another sender); send '
                             'this one again with a new id (leave "id" out and the bus assigns one)', p_request_id);
            INSERT INTO nexus.llm_calls (request_id, agent_id, task_type, status, error)
            VALUES (p_request_id, p_agent_id, p_task_type, 'refused', reason);
            RETURN jsonb_build_object('admitted', false, 'reason', reason, 'candidates', cands, 'conflict', true);
        END IF;
        -- a redelivery of a request already admitted: its reservation stands
        RETURN jsonb_build_object('admitted', true, 'candidates', cands, 'est_tokens', est_tok, 'est_cost', est_cost);
    END IF;
    lim := nexus._budget_of(p_agent_id);
    IF lim.daily_tokens IS NULL AND lim.daily_cost IS NULL THEN
        -- no limit applies: nothing to reserve; settle records the real use
        RETURN jsonb_build_object('admitted', true, 'candidates', cands, 'est_tokens', est_tok, 'est_cost', est_cost);
    END IF;
    INSERT INTO nexus.budget_usage (agent_id, day) VALUES (p_agent_id, d) ON CONFLICT DO NOTHING;
    -- the single statement that reserves or refuses
    UPDATE nexus.budget_usage u SET tokens = u.tokens + est_tok, cost = u.cost + est_cost
     WHERE u.agent_id = p_agent_id AND u.day = d
       AND (lim.daily_tokens IS NULL OR u.tokens + est_tok <= lim.daily_tokens)
       AND (lim.daily_cost IS NULL OR u.cost + est_cost <= lim.daily_cost)
    RETURNING true INTO ok;
    IF ok IS NULL THEN
        SELECT * INTO used FROM nexus.budget_usage u WHERE u.agent_id = p_agent_id AND u.day = d;
        reason := format('budget exceeded for agent %s on %s: this request may use %s tokens / %s cost, '
                         'already used %s of %s tokens and %s of %s cost; raise it with '
                         'orchestrator nexus budget set %s --tokens N --cost X',
                         p_agent_id, d, est_tok, round(est_cost, 6), used.tokens, coalesce(lim.daily_tokens::text, 'unlimited'),
                         round(used.cost, 6), coalesce(lim.daily_cost::text, 'unlimited'), p_agent_id);
        INSERT INTO nexus.llm_calls (request_id, agent_id, task_type, status, error)
        VALUES (p_request_id, p_agent_id, p_task_type, 'refused', reason);
        RETURN jsonb_build_object('admitted', false, 'reason', reason, 'candidates', cands);
    END IF;
    INSERT INTO nexus.reservations (request_id, agent_id, day, tokens, cost, sender, request_sha256)
    VALUES (p_request_id, p_agent_id, d, est_tok, est_cost, p_sender, p_sha256);
    RETURN jsonb_build_object('admitted', true, 'candidates', cands, 'est_tokens', est_tok, 'est_cost', est_cost);
END;
$$;
COMMENT ON FUNCTION nexus.admit(text, text, text, text, int, int, text, text) IS
    'Plans a request and atomically reserves its worst-case cost against the agent''s daily budget, or refuses.';

-- Settle: log every attempt (cost from the model's prices), replace the reservation by the real
-- tokens and cost. Returns {tokens_in, tokens_out, cost} of the successful attempt(s).
CREATE OR REPLACE FUNCTION nexus.settle(p_request_id text, p_agent_id text, p_task_type text, p_calls jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res   nexus.reservations;
    t_in  bigint;
    t_out bigint;
    c     numeric;
    d     date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    WITH ins AS (
        INSERT INTO nexus.llm_calls (request_id, agent_id, task_type, attempt, provider, model, tokens_in, tokens_out,
                                     latency_ms, cost, status, error)
        SELECT p_request_id, p_agent_id, p_task_type, x.attempt, x.provider, x.model, coalesce(x.tokens_in, 0),
               coalesce(x.tokens_out, 0), x.latency_ms,
               round(coalesce((coalesce(x.tokens_in, 0) * m.cost_in_per_1k + coalesce(x.tokens_out, 0) * m.cost_out_per_1k) / 1000, 0), 8),
               x.status, x.error
          FROM jsonb_array_elements(coalesce(p_calls, '[]'::jsonb)) WITH ORDINALITY AS e(doc, n)
          CROSS JOIN LATERAL jsonb_to_record(e.doc)
               AS x(attempt int, provider text, model text, tokens_in int, tokens_out int, latency_ms double precision,
                    status text, error text)
          LEFT JOIN nexus.models m ON m.name = x.model
         ORDER BY e.n
        RETURNING tokens_in, tokens_out, cost
    )
    SELECT coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), coalesce(sum(cost), 0) INTO t_in, t_out, c FROM ins;
    DELETE FROM nexus.reservations r WHERE r.request_id = p_request_id RETURNING * INTO res;
    IF res.request_id IS NOT NULL THEN
        UPDATE nexus.budget_usage u SET tokens = u.tokens - res.tokens + t_in + t_out, cost = u.cost - res.cost + c
         WHERE u.agent_id = res.agent_id AND u.day = res.day;
    ELSIF p_agent_id IS NOT NULL THEN
        INSERT INTO nexus.budget_usage AS u (agent_id, day, tokens, cost) VALUES (p_agent_id, d, t_in + t_out, c)
        ON CONFLICT (agent_id, day) DO UPDATE SET tokens = u.tokens + EXCLUDED.tokens, cost = u.cost + EXCLUDED.cost;
    END IF;
    RETURN jsonb_build_object('tokens_in', t_in, 'tokens_out', t_out, 'cost', c);
END;
$$;
COMMENT ON FUNCTION nexus.settle(text, text, text, jsonb) IS
    'Logs a request''s attempts in llm_calls and replaces its reservation by the real tokens and cost.';

-- Admit a batch in one call and one commit: nexus.admit on each element of P_REQUESTS, in order
-- ({request_id, agent_id, task_type, model, prompt_chars, max_tokens, sender, sha256}); an array of admissions.
CREATE OR REPLACE FUNCTION nexus.admit_many(p_requests jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out jsonb := '[]'::jsonb;
    x record;
BEGIN
    FOR x IN SELECT r.* FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS e(doc, k)
               CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r(request_id text, agent_id text, task_type text, model text,
                                                             prompt_chars int, max_tokens int, sender text, sha256 text)
              ORDER BY e.k LOOP
        out := out || jsonb_build_array(nexus.admit(x.request_id, x.agent_id, x.task_type, x.model, x.prompt_chars,
                                                    x.max_tokens, x.sender, x.sha256));
    END LOOP;
    RETURN out;
END;
$$;
COMMENT ON FUNCTION nexus.admit_many(jsonb) IS 'nexus.admit for each request of a batch, in one call.';

-- Settle a batch in one call and one commit: nexus.settle on each element of P_SETTLES, in order
-- ({request_id, agent_id, task_type, calls}); an array of totals.
CREATE OR REPLACE FUNCTION nexus.settle_many(p_settles jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out jsonb := '[]'::jsonb;
    x record;
BEGIN
    FOR x IN SELECT r.* FROM jsonb_array_elements(p_settles) WITH ORDINALITY AS e(doc, k)
               CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r(request_id text, agent_id text, task_type text, calls jsonb)
              ORDER BY e.k LOOP
        out := out || jsonb_build_array(nexus.settle(x.request_id, x.agent_id, x.task_type, x.calls));
    END LOOP;
    RETURN out;
END;
$$;
COMMENT ON FUNCTION nexus.settle_many(jsonb) IS 'nexus.settle for each request of a batch, in one call.';

-- Configuration (operator: `orchestrator nexus ...`, as the database owner) ----------------------
-- Each refuses a bad value with 22023, naming the value and the option that fixes it (never a raw constraint name).
CREATE OR REPLACE FUNCTION nexus.set_provider(p_name text, p_kind text, p_base_url text, p_api_key_env text,
                                              p_timeout_s double precision DEFAULT 60, p_max_retries int DEFAULT 2,
                                              p_backoff_ms int DEFAULT 500, p_enabled boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
    fix text;
BEGIN
    IF p_name IS NULL OR p_name !~ '^[a-z][a-z0-9_-]{0,40}$' THEN
        problem := format('provider name %L is not allowed', p_name);
        fix := 'use a lower-case letter, then up to 40 of a-z, 0-9, _ and -, e.g. openai or local-vllm';
    ELSIF p_kind IS NULL OR p_kind NOT IN ('openai', 'anthropic', 'gemini', 'offline') THEN
        problem := format('provider kind %L is not known', p_kind);
        fix := 'use --kind openai, anthropic, gemini or offline';
    ELSIF p_kind <> 'offline' AND coalesce(p_base_url, '') = '' THEN
        problem := format('a provider of kind %s needs a base URL', p_kind);
        fix := 'pass --base-url, e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1';
    ELSIF p_base_url IS NOT NULL AND p_base_url !~ '^https?://[^/\s]+' THEN
        problem := format('base URL %L is not an http(s) URL', p_base_url);
        fix := 'pass --base-url as http://HOST[:PORT]/PATH or https://...';
    ELSIF p_api_key_env IS NOT NULL AND p_api_key_env !~ '^[A-Z_][A-Z0-9_]*$' THEN
        problem := format('--key-env %L is not an environment variable name', left(p_api_key_env, 40));
        fix := 'give the NAME of the variable holding the key (e.g. --key-env OPENAI_API_KEY), never the key itself';
    ELSIF p_timeout_s IS NULL OR NOT p_timeout_s > 0 THEN
        problem := format('timeout %s s is not positive', p_timeout_s);
        fix := 'pass --timeout with the seconds one attempt may take, e.g. --timeout 60';
    ELSIF p_max_retries IS NULL OR p_max_retries NOT BETWEEN 0 AND 10 THEN
        problem := format('%s retries is out of range', p_max_retries);
        fix := 'pass --retries between 0 and 10';
    ELSIF p_backoff_ms IS NULL OR p_backoff_ms < 0 THEN
        problem := format('backoff %s ms is negative', p_backoff_ms);
        fix := 'pass --backoff-ms 0 or more (the first retry''s wait; it doubles per retry)';
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'provider %: %', p_name, problem USING ERRCODE = 'invalid_parameter_value', HINT = fix;
    END IF;
    INSERT INTO nexus.providers AS p (name, kind, base_url, api_key_env, timeout_s, max_retries, backoff_ms, enabled)
    VALUES (p_name, p_kind, p_base_url, p_api_key_env, p_timeout_s, p_max_retries, p_backoff_ms, p_enabled)
    ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, base_url = EXCLUDED.base_url,
        api_key_env = EXCLUDED.api_key_env, timeout_s = EXCLUDED.timeout_s, max_retries = EXCLUDED.max_retries,
        backoff_ms = EXCLUDED.backoff_ms, enabled = EXCLUDED.enabled;
END;
$$;
COMMENT ON FUNCTION nexus.set_provider(text, text, text, text, double precision, int, int, boolean) IS
    'Adds or changes a provider (api_key_env is the name of the env var with the key); a bad value: 22023 with the fix.';

CREATE OR REPLACE FUNCTION nexus.set_model(p_name text, p_provider text, p_remote_model text,
                                           p_cost_in_per_1k numeric DEFAULT 0, p_cost_out_per_1k numeric DEFAULT 0,
                                           p_max_tokens int DEFAULT 1024)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
    fix text;
BEGIN
    IF coalesce(p_name, '') = '' THEN
        problem := 'a model needs a name';
        fix := 'orchestrator nexus models set NAME --provider P';
    ELSIF NOT EXISTS (SELECT 1 FROM nexus.providers p WHERE p.name = p_provider) THEN
        problem := format('provider %L does not exist', p_provider);
        fix := 'add it first (orchestrator nexus providers set NAME --kind ...) or pick one of orchestrator nexus providers';
    ELSIF coalesce(p_remote_model, '') = '' THEN
        problem := 'the provider''s model name is empty';
        fix := 'pass --remote with the name the provider knows the model by';
    ELSIF p_cost_in_per_1k IS NULL OR p_cost_in_per_1k < 0 OR p_cost_out_per_1k IS NULL OR p_cost_out_per_1k < 0 THEN
        problem := format('prices %s / %s per 1000 tokens include a negative one', p_cost_in_per_1k, p_cost_out_per_1k);
        fix := 'pass --cost-in and --cost-out as 0 or more';
    ELSIF p_max_tokens IS NULL OR p_max_tokens <= 0 THEN
        problem := format('max_tokens %s is not positive', p_max_tokens);
        fix := 'pass --max-tokens 1 or more (the default for requests that name none)';
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'model %: %', p_name, problem USING ERRCODE = 'invalid_parameter_value', HINT = fix;
    END IF;
    INSERT INTO nexus.models AS m (name, provider, remote_model, cost_in_per_1k, cost_out_per_1k, max_tokens)
    VALUES (p_name, p_provider, p_remote_model, p_cost_in_per_1k, p_cost_out_per_1k, p_max_tokens)
    ON CONFLICT (name) DO UPDATE SET provider = EXCLUDED.provider, remote_model = EXCLUDED.remote_model,
        cost_in_per_1k = EXCLUDED.cost_in_per_1k, cost_out_per_1k = EXCLUDED.cost_out_per_1k,
        max_tokens = EXCLUDED.max_tokens;
END;
$$;
COMMENT ON FUNCTION nexus.set_model(text, text, text, numeric, numeric, int) IS
    'Adds or changes a model and its prices; a bad value: 22023 with the fix.';

CREATE OR REPLACE FUNCTION nexus.set_route(p_task_type text, p_models text[])
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(m, ', ') INTO missing FROM unnest(p_models) m WHERE NOT EXISTS (SELECT 1 FROM nexus.models x WHERE x.name = m);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'unknown model(s): %', missing USING ERRCODE = 'foreign_key_violation',
            HINT = 'add them first: orchestrator nexus models set NAME --provider P';
    END IF;
    DELETE FROM nexus.routes WHERE task_type = p_task_type;
    INSERT INTO nexus.routes (task_type, position, model)
    SELECT p_task_type, o::int, m FROM unnest(p_models) WITH ORDINALITY AS u(m, o);
    RETURN cardinality(p_models);
END;
$$;
COMMENT ON FUNCTION nexus.set_route(text, text[]) IS 'Replaces a task type''s route by these models in order (empty removes it).';

CREATE OR REPLACE FUNCTION nexus.set_budget(p_agent_id text, p_daily_tokens bigint, p_daily_cost numeric)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(p_agent_id, '') = '' THEN
        RAISE EXCEPTION 'a budget needs an agent id' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'orchestrator nexus budget set AGENT_ID (''*'' for every agent without its own)';
    END IF;
    IF p_daily_tokens < 0 THEN
        RAISE EXCEPTION 'budget %: a daily limit of % tokens is negative', p_agent_id, p_daily_tokens
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass --tokens 0 or more, or leave it out for no limit';
    END IF;
    IF p_daily_cost < 0 THEN
        RAISE EXCEPTION 'budget %: a daily cost limit of % is negative', p_agent_id, p_daily_cost
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass --cost 0 or more, or leave it out for no limit';
    END IF;
    INSERT INTO nexus.budgets AS b (agent_id, daily_tokens, daily_cost) VALUES (p_agent_id, p_daily_tokens, p_daily_cost)
    ON CONFLICT (agent_id) DO UPDATE SET daily_tokens = EXCLUDED.daily_tokens, daily_cost = EXCLUDED.daily_cost;
END;
$$;
COMMENT ON FUNCTION nexus.set_budget(text, bigint, numeric) IS
    'Sets an agent''s daily limits (''*'' for every agent); NULL = no limit; a negative one: 22023 with the fix.';

-- What the operator and the dashboard look at.
CREATE OR REPLACE VIEW nexus.recent_calls AS
SELECT id, created_at, request_id, agent_id, task_type, attempt, provider, model, tokens_in, tokens_out,
       round(latency_ms::numeric, 1) AS latency_ms, round(cost, 6) AS cost, status, error
  FROM nexus.llm_calls ORDER BY id DESC LIMIT 200;
COMMENT ON VIEW nexus.recent_calls IS 'The last 200 provider attempts and refusals.';

CREATE OR REPLACE VIEW nexus.budget_today AS
SELECT u.agent_id, u.day, u.tokens, round(u.cost, 6) AS cost, b.daily_tokens, b.daily_cost
  FROM nexus.budget_usage u
  LEFT JOIN LATERAL (SELECT * FROM nexus.budgets x WHERE x.agent_id IN (u.agent_id, '*')
                      ORDER BY x.agent_id = '*' LIMIT 1) b ON true
 WHERE u.day = (now() AT TIME ZONE 'UTC')::date;
COMMENT ON VIEW nexus.budget_today IS 'Tokens and cost used today per agent against its limits.';

CREATE OR REPLACE VIEW nexus.calls_hourly AS
SELECT date_trunc('hour', created_at) AS hour, count(*) AS calls,
       count(*) FILTER (WHERE status = 'ok') AS ok, count(*) FILTER (WHERE status <> 'ok') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms,
       sum(tokens_in + tokens_out) AS tokens, sum(cost) AS cost
  FROM nexus.llm_calls WHERE created_at > now() - interval '48 hours'
 GROUP BY 1;
COMMENT ON VIEW nexus.calls_hourly IS 'LLM calls per hour over the last 48 hours: count, failures, latency, tokens, cost.';

CREATE OR REPLACE VIEW nexus.call_totals AS
SELECT provider, model, status, count(*) AS calls, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
       sum(cost) AS cost, sum(latency_ms) / 1000 AS latency_s
  FROM nexus.llm_calls GROUP BY 1, 2, 3;
COMMENT ON VIEW nexus.call_totals IS 'Totals per provider, model and status since the start (Prometheus counters).';

CREATE OR REPLACE FUNCTION nexus.remove_provider(p_name text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM nexus.providers WHERE name = p_name RETURNING 1) SELECT EXISTS (SELECT 1 FROM d);
$$;
COMMENT ON FUNCTION nexus.remove_provider(text) IS 'Removes a provider with its models and their route entries (operator only).';

CREATE OR REPLACE VIEW nexus.route_list AS
SELECT task_type, string_agg(model, ' -> ' ORDER BY position) AS models FROM nexus.routes GROUP BY 1;
COMMENT ON VIEW nexus.route_list IS 'Each task type with its models in order (fallbacks after the first).';
