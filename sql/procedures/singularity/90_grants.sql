-- What the service role (svc_singularity or svc_singularity_<instance>) may do: insert agents,
-- tasks, analysis results, sessions and logs; read everything but the ciphertext; change state only
-- through the functions. It may not delete, truncate, touch the outbox, decrypt or alter the schema.
-- Re-applied on every migrate: everything is revoked from it and granted again in one transaction.
DO $$
DECLARE
    svc name := 'svc_' || current_database();
BEGIN
    REVOKE ALL ON ALL TABLES IN SCHEMA core, outbox FROM PUBLIC;
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA core, outbox FROM PUBLIC;
    REVOKE ALL ON SCHEMA core, outbox FROM PUBLIC;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = svc) THEN
        RETURN;
    END IF;
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA core, outbox FROM %I', svc);
    EXECUTE format('REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA core, outbox FROM %I', svc);  -- granted again below
    EXECUTE format('GRANT USAGE ON SCHEMA core, outbox, ops TO %I', svc);
    EXECUTE format('GRANT SELECT ON ops.cron_jobs TO %I', svc);
    EXECUTE format('GRANT SELECT ON core.agents, core.tasks, core.tasks_archive, core.analysis_results,
                    core.learned_patterns, core.agent_knowledge, core.logs, core.global_knowledge, core.templates,
                    core.job_runs, core.agent_results, core.agent_performance_5min, outbox.messages,
                    outbox.drain_runs TO %I', svc);
    EXECUTE format('GRANT SELECT (id, agent_id, key_id, synced_at, updated_at) ON core.agent_sessions TO %I', svc);
    EXECUTE format('GRANT INSERT (id, capacity, status), UPDATE (capacity, status) ON core.agents TO %I', svc);
    EXECUTE format('GRANT INSERT (id, kind, payload, priority) ON core.tasks TO %I', svc);
    -- seed 003 inserts with `learned: false` (a result marked learned is simply not learned again)
    EXECUTE format('GRANT INSERT (agent_id, result, confidence, learned) ON core.analysis_results TO %I', svc);
    EXECUTE format('GRANT INSERT (id, agent_id, state), UPDATE (state) ON core.agent_sessions TO %I', svc);
    EXECUTE format('GRANT INSERT (level, agent_id, message, detail) ON core.logs TO %I', svc);
    EXECUTE format('GRANT INSERT, UPDATE (result, completed_at) ON core.agent_results TO %I', svc);
    EXECUTE format('GRANT EXECUTE ON FUNCTION core.instance_id(), core.instance_queue(text), core._iso(timestamptz),
                    core._pattern_json(text, text, bigint, numeric, timestamptz, timestamptz, text[]),
                    core.learn_patterns_from_analysis(int), core.update_agent_knowledge(),
                    core.sync_learning_to_centralcloud(), core.assign_pending_tasks(int), core.start_task(text),
                    core.finish_task(text, jsonb), core.fail_task(text, text), core.refresh_agent_performance(),
                    core.cleanup_logs(interval, interval), core.archive_completed_tasks(interval), core.queue_heartbeat(),
                    core.get_cdc_changes(boolean, int), core.get_pattern_changes(boolean, int),
                    core.get_session_changes(boolean, int), core.run_job(text), core.jobs_status(),
                    core.queue_status(), core.record_request(text, text, text, jsonb, text),
                    core.store_result(text, jsonb), outbox.drain(int, int, int), outbox.consume_inbox(int),
                    core._result_is_learnable(jsonb), core._patterns_ok(jsonb) TO %I', svc);  -- the CHECK on analysis_results
    -- not outbox.drain_all (pg_cron runs it as the owner), _drain_batch or _record_drain: the service
    -- role drains only through outbox.drain (SECURITY DEFINER), so it cannot write drain records.
END $$;
