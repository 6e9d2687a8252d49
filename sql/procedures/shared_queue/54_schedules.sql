-- Schedules as reported from the `postgres` database (ops.report_schedules, run there by pg_cron as the
-- superuser, arriving here over dblink as own_shared_queue, never as a superuser): stored in
-- bus.schedule_runs for the dashboard, /metrics and bus.alerts().

-- Replace the snapshot of the jobs of P_DATABASES (NULL: every database) with P_JOBS (a JSON array of
-- objects with bus.schedule_runs' columns). Jobs of those databases missing from the array were
-- unscheduled and are removed; other databases' jobs (another server's pg_cron reports them) are kept.
-- Returns how many jobs it stored.
CREATE OR REPLACE FUNCTION bus._report_schedules_from(p_jobs jsonb, p_databases text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    IF p_jobs IS NULL OR jsonb_typeof(p_jobs) <> 'array' THEN
        RAISE EXCEPTION 'bus._report_schedules: expected a JSON array of jobs, got %', coalesce(jsonb_typeof(p_jobs), 'NULL')
              USING ERRCODE = '22023', HINT = 'Call it through ops.report_schedules() in the postgres database.';
    END IF;
    DELETE FROM bus.schedule_runs s
     WHERE (p_databases IS NULL OR s.database = ANY (p_databases))
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_jobs) j WHERE j->>'jobname' = s.jobname);
    INSERT INTO bus.schedule_runs AS s (jobname, schedule, database, active, last_status, last_start, last_end,
                                        last_message, runs_24h, failures_24h, reported_at, recent)
    SELECT r.jobname, r.schedule, r.database, r.active, r.last_status, r.last_start, r.last_end,
           left(r.last_message, 500), coalesce(r.runs_24h, 0), coalesce(r.failures_24h, 0), now(),
           CASE WHEN jsonb_typeof(r.recent) = 'array' THEN r.recent ELSE '[]'::jsonb END
      FROM jsonb_to_recordset(p_jobs) AS r(jobname text, schedule text, database text, active boolean,
                                          last_status text, last_start timestamptz, last_end timestamptz,
                                          last_message text, runs_24h int, failures_24h int, recent jsonb)
    ON CONFLICT (jobname) DO UPDATE
       SET schedule = EXCLUDED.schedule, database = EXCLUDED.database, active = EXCLUDED.active,
           last_status = EXCLUDED.last_status, last_start = EXCLUDED.last_start, last_end = EXCLUDED.last_end,
           last_message = EXCLUDED.last_message, runs_24h = EXCLUDED.runs_24h,
           failures_24h = EXCLUDED.failures_24h, reported_at = EXCLUDED.reported_at, recent = EXCLUDED.recent;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION bus._report_schedules_from(jsonb, text[]) IS
    'Replaces the rows of bus.schedule_runs of the given databases (one server''s) with the jobs its pg_cron reports (owner and superuser only).';
REVOKE EXECUTE ON FUNCTION bus._report_schedules_from(jsonb, text[]) FROM PUBLIC;

-- The whole snapshot (one server holds every database): bus._report_schedules_from(P_JOBS, NULL).
CREATE OR REPLACE FUNCTION bus._report_schedules(p_jobs jsonb)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT bus._report_schedules_from(p_jobs, NULL) $$;
COMMENT ON FUNCTION bus._report_schedules(jsonb) IS
    'Replaces bus.schedule_runs with the jobs pg_cron reports (owner and superuser only).';
REVOKE EXECUTE ON FUNCTION bus._report_schedules(jsonb) FROM PUBLIC;

-- Alerts about schedules: a job whose last run failed, and a report that stopped arriving.
CREATE OR REPLACE FUNCTION bus._schedule_alerts()
RETURNS TABLE (severity text, subject text, message text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'warning', s.jobname,
           'last run failed: ' || left(coalesce(s.last_message, ''), 120),
           CASE WHEN s.last_message ILIKE '%server restarted%'
                THEN 'nothing is wrong with the job: the server restarted while it ran; it runs again on schedule'
                     || CASE split_part(s.jobname, ':', 1)
                          WHEN 'singularity' THEN ', or now: orchestrator autonomous --help lists its run-now command'
                          WHEN 'centralcloud' THEN ', or now: orchestrator centralcloud run '
                                                   || replace(split_part(s.jobname, ':', 2), '_', '-')
                          ELSE '' END
                ELSE 'orchestrator status shows the job and its error; fix its SQL or its database, '
                     'it runs again on schedule' END
      FROM bus.schedule_runs s
     WHERE s.active AND s.last_status = 'failed'
    UNION ALL
    SELECT 'warning', 'schedules',
           format('pg_cron has not reported the schedules for %s s', extract(epoch FROM now() - max(s.reported_at))::int),
           'is pg_cron running (orchestrator status; shared_preload_libraries)? the report is the job '
           'postgres:report_schedules'
      FROM bus.schedule_runs s
    HAVING max(s.reported_at) < now() - interval '5 minutes';
$$;
COMMENT ON FUNCTION bus._schedule_alerts() IS 'bus.alerts() rows about pg_cron schedules (failed last run, stale report).';
REVOKE EXECUTE ON FUNCTION bus._schedule_alerts() FROM PUBLIC;
