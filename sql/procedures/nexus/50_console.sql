-- The operator console on the Nexus page (issue 16): LLM calls with filters, cost per day and model, and
-- decided approvals and questions with who decided, when and their comment. SECURITY DEFINER functions
-- owned by the nexus owner, granted to svc_nexus, which reads none of the tables behind them.

-- One page of LLM calls (provider attempts and refusals), newest first, filtered by model, agent and
-- status when given (NULL or '' = any). total counts the matching rows.
CREATE OR REPLACE FUNCTION nexus.console_calls(p_model text DEFAULT NULL, p_agent text DEFAULT NULL,
                                               p_status text DEFAULT NULL, p_limit int DEFAULT 50,
                                               p_offset int DEFAULT 0)
RETURNS TABLE (id bigint, created_at timestamptz, request_id text, agent_id text, task_type text, attempt int,
               provider text, model text, tokens_in int, tokens_out int, latency_ms numeric, cost numeric,
               status text, error text, total bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.created_at, c.request_id, c.agent_id, c.task_type, c.attempt, c.provider, c.model,
           c.tokens_in, c.tokens_out, round(c.latency_ms::numeric, 1), round(c.cost, 6), c.status, left(c.error, 500),
           count(*) OVER ()
      FROM nexus.llm_calls c
     WHERE (nullif(p_model, '') IS NULL OR c.model = p_model)
       AND (nullif(p_agent, '') IS NULL OR c.agent_id = p_agent)
       AND (nullif(p_status, '') IS NULL OR c.status = p_status)
     ORDER BY c.id DESC
     LIMIT least(greatest(coalesce(p_limit, 50), 1), 500) OFFSET greatest(coalesce(p_offset, 0), 0);
$$;
COMMENT ON FUNCTION nexus.console_calls(text, text, text, int, int) IS
    'LLM calls filtered by model, agent and status, one page at a time (Nexus console).';

-- The values the call filters offer: every model and agent seen in the last P_DAYS days.
CREATE OR REPLACE FUNCTION nexus.console_call_choices(p_days int DEFAULT 30)
RETURNS TABLE (field text, value text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT 'model', c.model FROM nexus.llm_calls c
     WHERE c.model IS NOT NULL AND c.created_at > now() - make_interval(days => p_days)
    UNION
    SELECT DISTINCT 'agent', c.agent_id FROM nexus.llm_calls c
     WHERE c.agent_id IS NOT NULL AND c.created_at > now() - make_interval(days => p_days)
    ORDER BY 1, 2;
$$;
COMMENT ON FUNCTION nexus.console_call_choices(int) IS 'Models and agents seen lately, for the call filters.';

-- Calls, tokens and cost per UTC day and model over the last P_DAYS days.
CREATE OR REPLACE FUNCTION nexus.console_cost(p_days int DEFAULT 14)
RETURNS TABLE (day date, model text, calls bigint, tokens bigint, cost numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (c.created_at AT TIME ZONE 'UTC')::date, coalesce(c.model, '(none)'), count(*),
           sum(c.tokens_in + c.tokens_out)::bigint, round(sum(c.cost), 6)
      FROM nexus.llm_calls c
     WHERE c.created_at > now() - make_interval(days => least(greatest(coalesce(p_days, 14), 1), 366))
     GROUP BY 1, 2 ORDER BY 1, 2;
$$;
COMMENT ON FUNCTION nexus.console_cost(int) IS 'Calls, tokens and cost per day and model (Nexus console).';

-- Decided approvals and questions, one row per vote or answer: who, when, what and the comment, newest
-- first; filtered by kind (approval / question), by who decided and by agent when given.
CREATE OR REPLACE FUNCTION nexus.console_decisions(p_kind text DEFAULT NULL, p_by text DEFAULT NULL,
                                                   p_agent text DEFAULT NULL, p_limit int DEFAULT 50,
                                                   p_offset int DEFAULT 0)
RETURNS TABLE (request_id text, kind text, agent_id text, subject text, status text, decided_by text,
               approved boolean, response text, comment text, decided_at timestamptz, asked_at timestamptz,
               total bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.request_id, i.kind, i.agent_id,
           coalesce(i.payload->>'file_path', i.payload->>'question'), i.status, d.decided_by, d.approved,
           d.response, d.comment, d.created_at, i.created_at, count(*) OVER ()
      FROM nexus.hitl_decisions d JOIN nexus.hitl_items i ON i.request_id = d.request_id
     WHERE (nullif(p_kind, '') IS NULL OR i.kind = p_kind)
       AND (nullif(p_by, '') IS NULL OR d.decided_by = p_by)
       AND (nullif(p_agent, '') IS NULL OR i.agent_id = p_agent)
     ORDER BY d.created_at DESC, d.id DESC
     LIMIT least(greatest(coalesce(p_limit, 50), 1), 500) OFFSET greatest(coalesce(p_offset, 0), 0);
$$;
COMMENT ON FUNCTION nexus.console_decisions(text, text, text, int, int) IS
    'Votes and answers on approvals and questions (who, when, comment), filtered, one page at a time (Nexus console).';

REVOKE EXECUTE ON FUNCTION nexus.console_calls(text, text, text, int, int), nexus.console_call_choices(int),
    nexus.console_cost(int), nexus.console_decisions(text, text, text, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nexus.console_calls(text, text, text, int, int), nexus.console_call_choices(int),
    nexus.console_cost(int), nexus.console_decisions(text, text, text, int, int) TO svc_nexus;
