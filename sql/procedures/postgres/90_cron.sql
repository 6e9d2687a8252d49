-- Schedules of the `postgres` database (pg_cron's own): prune pg_cron's history, and report every
-- job's last run to shared_queue, where the dashboard, /metrics and bus.alerts() read it (no service
-- role may connect here).

-- Push every pg_cron job with its last finished run and 24 h counts to shared_queue (bus._report_schedules),
-- over dblink server shared_queue_owner: the user mapping migrate makes (orchestrator/links.py) logs in
-- as own_shared_queue, so the owner's function runs with the owner's rights, never the superuser's.
-- Returns how many jobs were reported.
-- With the databases on several servers, each server's pg_cron reports the jobs of its own databases
-- (bus._report_schedules_from keeps the other servers' rows) and takes the run-now requests of those
-- only; the `postgres` database's own jobs are reported by the bus's server only (they have the same
-- names on every server).
CREATE OR REPLACE FUNCTION ops.report_schedules()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    jobs jsonb;
    n integer;
    req record;
    at timestamptz := (now() + interval '1 minute') AT TIME ZONE coalesce(current_setting('cron.timezone', true), 'GMT');
    bus_here boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = 'shared_queue');
    dbs text[];
BEGIN
    SELECT array_agg(datname::text ORDER BY datname) INTO dbs
      FROM pg_catalog.pg_database WHERE NOT datistemplate AND (bus_here OR datname <> 'postgres');
    -- one-off runs asked for on the Nexus page (runnow:<job>): gone once they have finished a run
    PERFORM cron.unschedule(j.jobid) FROM cron.job j
     WHERE starts_with(j.jobname, 'runnow:')
       AND EXISTS (SELECT 1 FROM cron.job_run_details r WHERE r.jobid = j.jobid AND r.status IN ('succeeded', 'failed'));
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'jobname', j.jobname, 'schedule', j.schedule, 'database', j.database, 'active', j.active,
               'last_status', d.status, 'last_start', d.start_time, 'last_end', d.end_time,
               'last_message', d.return_message, 'runs_24h', c.runs, 'failures_24h', c.failures,
               'recent', coalesce(rr.runs, '[]'::jsonb))
               ORDER BY j.jobname), '[]'::jsonb)
      INTO jobs
      FROM cron.job j
      LEFT JOIN LATERAL (SELECT r.status, r.start_time, r.end_time, r.return_message
                           FROM cron.job_run_details r
                          WHERE r.jobid = j.jobid AND r.status IN ('succeeded', 'failed')  -- finished runs
                          ORDER BY r.start_time DESC NULLS LAST LIMIT 1) d ON true
      LEFT JOIN LATERAL (SELECT count(*) AS runs, count(*) FILTER (WHERE r.status = 'failed') AS failures
                           FROM cron.job_run_details r
                          WHERE r.jobid = j.jobid AND r.start_time > now() - interval '1 day') c ON true
      LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('start', x.start_time, 'end', x.end_time,
                                          'status', x.status, 'message', left(x.return_message, 300),
                                          'manual', x.manual) ORDER BY x.start_time DESC) AS runs
                           FROM (SELECT r.start_time, r.end_time, r.status, r.return_message, o.jobname <> j.jobname AS manual
                                   FROM cron.job_run_details r JOIN cron.job o ON o.jobid = r.jobid
                                  WHERE o.jobname IN (j.jobname, 'runnow:' || j.jobname)
                                    AND r.status IN ('succeeded', 'failed')
                                  ORDER BY r.start_time DESC NULLS LAST LIMIT 10) x) rr ON true
     WHERE j.jobname IS NOT NULL AND NOT starts_with(j.jobname, 'runnow:') AND j.database = ANY (dbs);
    SELECT t.n INTO n
      FROM extensions.dblink('shared_queue_owner',
                             format('SELECT bus._report_schedules_from(%L::jsonb, %L::text[])', jobs, dbs)) AS t(n integer);
    -- run-now requests: one run of the job's own command, database and user at the next minute; only jobs
    -- of an existing non-superuser (the list arrives from a function shared_queue's owner could replace)
    FOR req IN SELECT DISTINCT j.jobname, j.command, j.database, j.username
                 FROM extensions.dblink('shared_queue_owner',
                                        format('SELECT jobname FROM bus._take_run_requests(%L::text[])', dbs))
                      AS t(jobname text)
                 JOIN cron.job j ON j.jobname = t.jobname
                 JOIN pg_catalog.pg_roles r ON r.rolname = j.username
                WHERE NOT r.rolsuper LOOP  -- the names come from shared_queue's owner: never a superuser's job
        PERFORM cron.schedule_in_database('runnow:' || req.jobname,
                                          format('%s %s * * *', extract(minute FROM at)::int, extract(hour FROM at)::int),
                                          req.command, req.database, req.username, true);
    END LOOP;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION ops.report_schedules() IS
    'Reports every pg_cron job''s last runs to shared_queue (bus.schedule_runs) and schedules the run-now requests made on the Nexus page; run each minute by pg_cron.';
REVOKE EXECUTE ON FUNCTION ops.report_schedules() FROM PUBLIC;

DELETE FROM ops.cron_jobs WHERE jobname NOT IN ('prune_cron_history', 'report_schedules');
INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as, comment) VALUES
    ('prune_cron_history', '23 3 * * *',
     $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '14 days'$$, 'postgres',
     'pg_cron keeps every run forever otherwise'),
    ('report_schedules', '* * * * *', 'SELECT ops.report_schedules()', 'postgres',
     'the jobs'' last runs for the dashboard, /metrics and alerts in shared_queue')
ON CONFLICT (jobname) DO UPDATE SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
    run_as = EXCLUDED.run_as, comment = EXCLUDED.comment;
