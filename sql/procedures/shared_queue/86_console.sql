-- The operator console on the Nexus page (issue 16): narrow SECURITY DEFINER functions owned by the
-- shared_queue owner and granted to svc_nexus. They read one queue's messages, the dead letters and the
-- heartbeats, purge dead letters, and record a run-now request for a schedule; svc_nexus gets none of the
-- tables or operator functions they use.

-- One page of QUEUE's messages in STATE (waiting: visible now; in_flight: held by a consumer; archived),
-- newest first, optionally only those whose msg_id, envelope id, request_id or agent_id is SEARCH.
-- total is the number of matching rows (for pagination). An unknown queue or state: 22023.
CREATE OR REPLACE FUNCTION bus.console_messages(p_queue text, p_state text DEFAULT 'waiting',
                                                p_search text DEFAULT NULL, p_limit int DEFAULT 50,
                                                p_offset int DEFAULT 0)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, vt timestamptz, archived_at timestamptz,
               envelope_id text, request_id text, agent_id text, message jsonb, total bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text := nullif(btrim(p_search), '');
    lim int := least(greatest(coalesce(p_limit, 50), 1), 500);
    off int := greatest(coalesce(p_offset, 0), 0);
    filt text := '($1 IS NULL OR m.msg_id::text = $1 OR m.message->>''id'' = $1 '
                 'OR m.message->>''request_id'' = $1 OR m.message->>''agent_id'' = $1)';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM bus.queues q WHERE q.queue_name = p_queue) THEN
        RAISE EXCEPTION 'no queue named %', coalesce(p_queue, 'NULL') USING ERRCODE = '22023',
              HINT = 'pick one of the queues listed on the dashboard';
    END IF;
    IF p_state IN ('waiting', 'in_flight') THEN
        RETURN QUERY EXECUTE format(
            'SELECT m.msg_id, m.read_ct, m.enqueued_at, m.vt, NULL::timestamptz, m.message->>''id'', '
            '       m.message->>''request_id'', m.message->>''agent_id'', m.message, count(*) OVER () '
            '  FROM pgmq.%I m WHERE (m.vt %s clock_timestamp()) AND %s ORDER BY m.msg_id DESC LIMIT %s OFFSET %s',
            'q_' || p_queue, CASE p_state WHEN 'waiting' THEN '<=' ELSE '>' END, filt, lim, off) USING s;
    ELSIF p_state = 'archived' THEN
        RETURN QUERY EXECUTE format(
            'SELECT m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.archived_at, m.message->>''id'', '
            '       m.message->>''request_id'', m.message->>''agent_id'', m.message, count(*) OVER () '
            '  FROM pgmq.%I m WHERE %s ORDER BY m.msg_id DESC LIMIT %s OFFSET %s',
            'a_' || p_queue, filt, lim, off) USING s;
    ELSE
        RAISE EXCEPTION 'no message state named %', coalesce(p_state, 'NULL') USING ERRCODE = '22023',
              HINT = 'waiting, in_flight or archived';
    END IF;
END;
$$;
COMMENT ON FUNCTION bus.console_messages(text, text, text, int, int) IS
    'One page of a queue''s waiting, in-flight or archived messages, searchable by id, request_id or agent (Nexus console).';

-- Counts per state of every queue (waiting / in flight / archived) for the console's queue list.
CREATE OR REPLACE FUNCTION bus.console_queue_counts()
RETURNS TABLE (queue_name text, waiting bigint, in_flight bigint, archived bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text;
BEGIN
    FOR q IN SELECT x.queue_name FROM bus.queues x ORDER BY 1 LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %L::text, (SELECT count(*) FROM pgmq.%I WHERE vt <= clock_timestamp()), '
            '(SELECT count(*) FROM pgmq.%I WHERE vt > clock_timestamp()), (SELECT count(*) FROM pgmq.%I)',
            q, 'q_' || q, 'q_' || q, 'a_' || q);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION bus.console_queue_counts() IS 'Waiting, in-flight and archived messages per queue (Nexus console).';

-- One page of dead letters with the original queue, error, attempts, sender and the original message.
CREATE OR REPLACE FUNCTION bus.console_dead_letters(p_queue text DEFAULT NULL, p_limit int DEFAULT 50,
                                                    p_offset int DEFAULT 0)
RETURNS TABLE (msg_id bigint, enqueued_at timestamptz, queue text, error text, attempts int, sender text,
               message jsonb, total bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.msg_id, d.enqueued_at, d.message->>'queue', d.message->>'error', (d.message->>'attempts')::int,
           d.message->>'sender', d.message->'message', count(*) OVER ()
      FROM pgmq.q_dead_letters d
     WHERE p_queue IS NULL OR d.message->>'queue' = p_queue
     ORDER BY d.msg_id DESC
     LIMIT least(greatest(coalesce(p_limit, 50), 1), 500) OFFSET greatest(coalesce(p_offset, 0), 0);
$$;
COMMENT ON FUNCTION bus.console_dead_letters(text, int, int) IS
    'Dead letters with their error and original message, one page at a time (Nexus console).';

-- Purge dead letters (all, or of one original queue) from the page: they move to the DLQ's archive
-- (bus.dlq_purge), so nothing is lost before retention. Returns how many.
CREATE OR REPLACE FUNCTION bus.console_dlq_purge(p_queue text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bus.dlq_purge(p_queue);
$$;
COMMENT ON FUNCTION bus.console_dlq_purge(text) IS 'bus.dlq_purge from the Nexus page (after a confirmation there).';

-- Every daemon seen in instance_heartbeat, with what its last beat said (host, pid, workers, in-flight,
-- version) and whether it is healthy, late, gone or stopped.
CREATE OR REPLACE FUNCTION bus.console_workers()
RETURNS TABLE (service text, instance_id text, last_seen timestamptz, age_s int, status text, stats jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.service, h.instance_id, h.last_seen, h.age_s, h.status, h.stats FROM bus.heartbeat_status() h;
$$;
COMMENT ON FUNCTION bus.console_workers() IS 'bus.heartbeat_status() for the Nexus console''s workers page.';

-- Each schedule with its last finished runs (as pg_cron reported them) and a pending run-now request.
CREATE OR REPLACE FUNCTION bus.console_schedules()
RETURNS TABLE (jobname text, schedule text, database text, active boolean, last_status text,
               last_start timestamptz, last_end timestamptz, last_message text, runs_24h int, failures_24h int,
               reported_at timestamptz, recent jsonb, run_requested_at timestamptz, run_requested_by text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.jobname, s.schedule, s.database, s.active, s.last_status, s.last_start, s.last_end, s.last_message,
           s.runs_24h, s.failures_24h, s.reported_at, s.recent, r.requested_at, r.requested_by
      FROM bus.schedule_runs s
      LEFT JOIN LATERAL (SELECT x.requested_at, x.requested_by FROM bus.schedule_run_requests x
                          WHERE x.jobname = s.jobname AND x.requested_at > now() - interval '10 minutes'
                          ORDER BY x.id DESC LIMIT 1) r ON true
     ORDER BY s.jobname;
$$;
COMMENT ON FUNCTION bus.console_schedules() IS 'Schedules with their recent runs and run-now requests (Nexus console).';

-- Ask for one run of JOBNAME now, on behalf of P_BY (a signed-in person). Only a job pg_cron reported may
-- be named, and none of the postgres database's (they run as the superuser); postgres:report_schedules schedules a one-off run of the job's own command, database and user
-- at its next pass (within about two minutes). Returns the request id. Unknown job: 22023.
CREATE OR REPLACE FUNCTION bus.console_schedule_run_now(p_jobname text, p_by text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM bus.schedule_runs s WHERE s.jobname = p_jobname) THEN
        RAISE EXCEPTION 'no schedule named %', coalesce(p_jobname, 'NULL') USING ERRCODE = '22023',
              HINT = 'pick one of the schedules listed on the page';
    END IF;
    IF EXISTS (SELECT 1 FROM bus.schedule_runs s WHERE s.jobname = p_jobname AND s.database = 'postgres') THEN
        RAISE EXCEPTION 'schedule % runs as the superuser in the postgres database: not run from the page', p_jobname
              USING ERRCODE = '22023', HINT = 'it runs again on schedule; an operator may run its command by hand';
    END IF;
    IF coalesce(p_by, '') = '' THEN
        RAISE EXCEPTION 'a run-now request needs the name of who asked' USING ERRCODE = '22023';
    END IF;
    INSERT INTO bus.schedule_run_requests (jobname, requested_by) VALUES (p_jobname, p_by) RETURNING id INTO rid;
    RETURN rid;
END;
$$;
COMMENT ON FUNCTION bus.console_schedule_run_now(text, text) IS
    'Records a run-now request for a reported schedule; postgres:report_schedules runs it once (Nexus console).';

-- For ops.report_schedules (over dblink as the owner): the run-now requests not yet taken, marked taken.
DROP FUNCTION IF EXISTS bus._take_run_requests();   -- now scoped to the calling server's databases
CREATE OR REPLACE FUNCTION bus._take_run_requests(p_databases text[] DEFAULT NULL)
RETURNS TABLE (jobname text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE bus.schedule_run_requests r SET taken_at = now()
     WHERE r.taken_at IS NULL AND r.requested_at > now() - interval '1 hour'
       AND (p_databases IS NULL OR split_part(r.jobname, ':', 1) = ANY (p_databases))
    RETURNING r.jobname;
$$;
COMMENT ON FUNCTION bus._take_run_requests(text[]) IS
    'Run-now requests of jobs in P_DATABASES (all when NULL) for a server''s postgres:report_schedules (owner only).';

REVOKE EXECUTE ON FUNCTION bus.console_messages(text, text, text, int, int), bus.console_queue_counts(),
    bus.console_dead_letters(text, int, int), bus.console_dlq_purge(text), bus.console_workers(),
    bus.console_schedules(), bus.console_schedule_run_now(text, text), bus._take_run_requests(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bus.console_messages(text, text, text, int, int), bus.console_queue_counts(),
    bus.console_dead_letters(text, int, int), bus.console_dlq_purge(text), bus.console_workers(),
    bus.console_schedules(), bus.console_schedule_run_now(text, text) TO svc_nexus;
