-- Tasks: capacity-aware, priority-ordered assignment that never double-assigns, plus the
-- agents.load bookkeeping (statement-level triggers over transition tables).

-- Keep core.agents.load = number of the agent's tasks in assigned/running state.
CREATE OR REPLACE FUNCTION core._track_load()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE core.agents a SET load = a.load + d.n
          FROM (SELECT assigned_agent, count(*) n FROM new_rows WHERE status IN ('assigned', 'running')
                 AND assigned_agent IS NOT NULL GROUP BY 1) d WHERE a.id = d.assigned_agent;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE core.agents a SET load = greatest(a.load - d.n, 0)
          FROM (SELECT assigned_agent, count(*) n FROM old_rows WHERE status IN ('assigned', 'running')
                 AND assigned_agent IS NOT NULL GROUP BY 1) d WHERE a.id = d.assigned_agent;
    ELSE
        UPDATE core.agents a SET load = greatest(a.load + d.n, 0)
          FROM (SELECT agent, sum(n) n FROM (
                    SELECT assigned_agent AS agent, count(*) AS n FROM new_rows
                     WHERE status IN ('assigned', 'running') AND assigned_agent IS NOT NULL GROUP BY 1
                    UNION ALL
                    SELECT assigned_agent, -count(*) FROM old_rows
                     WHERE status IN ('assigned', 'running') AND assigned_agent IS NOT NULL GROUP BY 1) x
                 GROUP BY agent HAVING sum(n) <> 0) d WHERE a.id = d.agent;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION core._track_load() IS 'Statement trigger: keeps agents.load in step with assigned/running tasks.';

CREATE OR REPLACE TRIGGER track_load_ins AFTER INSERT ON core.tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION core._track_load();
CREATE OR REPLACE TRIGGER track_load_upd AFTER UPDATE ON core.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION core._track_load();
CREATE OR REPLACE TRIGGER track_load_del AFTER DELETE ON core.tasks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION core._track_load();

-- Assign pending tasks (highest priority first, then oldest) to active agents with free capacity,
-- spreading them round-robin. Tasks and agents are locked with SKIP LOCKED, so concurrent
-- assigners take disjoint sets and never assign a task twice or overfill an agent. Returns how many.
CREATE OR REPLACE FUNCTION core.assign_pending_tasks(p_limit int DEFAULT NULL)
RETURNS int LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    -- Locking an agent row yields its newest load (READ COMMITTED re-reads a concurrently updated row).
    WITH ag AS MATERIALIZED (
        SELECT id AS agent_id, capacity - load AS free FROM core.agents
         WHERE status = 'active' AND load < capacity
         ORDER BY id FOR UPDATE SKIP LOCKED
    ), picked AS MATERIALIZED (
        SELECT id, priority FROM core.tasks WHERE status = 'pending'
         ORDER BY priority DESC, id
         LIMIT least((SELECT coalesce(sum(free), 0) FROM ag), coalesce(p_limit, 2147483647))
           FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT id, row_number() OVER (ORDER BY priority DESC, id) AS rn FROM picked
    ), slots AS (
        SELECT agent_id, row_number() OVER (ORDER BY k, agent_id) AS rn
          FROM ag CROSS JOIN LATERAL generate_series(1, free) k
    )
    UPDATE core.tasks t SET status = 'assigned', assigned_agent = s.agent_id, assigned_at = now()
      FROM ranked r JOIN slots s USING (rn)
     WHERE t.id = r.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.assign_pending_tasks(int) IS
    'Capacity-aware, priority-ordered assignment with SKIP LOCKED (never double-assigns). Returns tasks assigned.';

-- The agent starts working on task P_ID (assigned -> running).
CREATE OR REPLACE FUNCTION core.start_task(p_id text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE core.tasks SET status = 'running' WHERE id = p_id AND status = 'assigned';
    IF NOT FOUND THEN
        PERFORM core._task_state_error(p_id, 'start', 'assigned');
    END IF;
END;
$$;

-- Task P_ID is done with RESULT (assigned/running -> completed); frees the agent's capacity.
CREATE OR REPLACE FUNCTION core.finish_task(p_id text, p_result jsonb)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE core.tasks SET status = 'completed', completed_at = now(), result = p_result
     WHERE id = p_id AND status IN ('assigned', 'running');
    IF NOT FOUND THEN
        PERFORM core._task_state_error(p_id, 'finish', 'assigned or running');
    END IF;
END;
$$;

-- Task P_ID failed with ERROR (assigned/running -> failed); frees the agent's capacity.
CREATE OR REPLACE FUNCTION core.fail_task(p_id text, p_error text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE core.tasks SET status = 'failed', completed_at = now(), result = jsonb_build_object('error', p_error)
     WHERE id = p_id AND status IN ('assigned', 'running');
    IF NOT FOUND THEN
        PERFORM core._task_state_error(p_id, 'fail', 'assigned or running');
    END IF;
END;
$$;

-- Raises the right error for a task transition that matched no row.
CREATE OR REPLACE FUNCTION core._task_state_error(p_id text, p_verb text, p_want text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
BEGIN
    SELECT status INTO st FROM core.tasks WHERE id = p_id;
    IF st IS NULL THEN
        RAISE EXCEPTION 'no task %', p_id USING ERRCODE = 'no_data_found',
            HINT = 'Check the id (SELECT id, status FROM core.tasks); archived tasks are in core.tasks_archive.';
    END IF;
    RAISE EXCEPTION 'cannot % task %: it is %, not %', p_verb, p_id, st, p_want
        USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only an assigned or running task can change state.';
END;
$$;
