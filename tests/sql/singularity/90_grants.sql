-- What svc_singularity may do, and what it may NOT do (42501), plus the schedules it runs.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(32);
TRUNCATE core.agents, core.agent_knowledge, core.tasks, core.analysis_results, core.agent_sessions, outbox.messages CASCADE;
INSERT INTO core.agents (id) VALUES ('g1');
INSERT INTO core.tasks (id) VALUES ('gt');

-- may
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO core.agents (id, capacity) VALUES ('g2', 3); RESET ROLE$$, 'may insert an agent');
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; UPDATE core.agents SET status = 'paused' WHERE id = 'g2'; RESET ROLE$$, 'may pause an agent');
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO core.tasks (kind, payload, priority) VALUES ('k', '{}', 1); RESET ROLE$$, 'may insert a task');
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO core.analysis_results (agent_id, result) VALUES ('g1', '{"patterns": []}'); RESET ROLE$$, 'may insert an analysis result');
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO core.logs (message) VALUES ('hello'); RESET ROLE$$, 'may log');
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; SELECT core.run_job('assign_tasks'); RESET ROLE$$, 'may run a job');
SELECT lives_ok($$SET LOCAL ROLE svc_singularity; SELECT * FROM core.jobs_status(); SELECT * FROM core.queue_status(); RESET ROLE$$, 'may read job and queue status');

-- may NOT
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; DELETE FROM core.tasks; RESET ROLE$$, '42501', NULL, 'may not delete tasks');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; UPDATE core.tasks SET status = 'completed'; RESET ROLE$$, '42501', NULL, 'may not change task state directly');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; UPDATE core.tasks SET assigned_agent = 'g1'; RESET ROLE$$, '42501', NULL, 'may not assign by hand');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; UPDATE core.agents SET load = 0; RESET ROLE$$, '42501', NULL, 'may not reset an agent''s load');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO core.tasks (id, status, assigned_agent) VALUES ('x', 'assigned', 'g1'); RESET ROLE$$, '42501', NULL, 'may not insert an already-assigned task');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; UPDATE core.analysis_results SET learned = true; RESET ROLE$$, '42501', NULL, 'may not mark results learned');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; UPDATE core.learned_patterns SET occurrences = 0; RESET ROLE$$, '42501', NULL, 'may not edit learned patterns');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO outbox.messages (queue, message) VALUES ('x', '{}'); RESET ROLE$$, '42501', NULL, 'may not write the outbox directly');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; DELETE FROM outbox.messages; RESET ROLE$$, '42501', NULL, 'may not delete outbox rows');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT outbox.enqueue('x', '{}'); RESET ROLE$$, '42501', NULL, 'may not call outbox.enqueue');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; DELETE FROM core.logs; RESET ROLE$$, '42501', NULL, 'may not delete logs');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; TRUNCATE core.job_runs; RESET ROLE$$, '42501', NULL, 'may not truncate job history');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO core.global_knowledge (key) VALUES ('k'); RESET ROLE$$, '42501', NULL, 'may not write global knowledge');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; CREATE TABLE core.mine (x int); RESET ROLE$$, '42501', NULL, 'may not create tables in core');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; REFRESH MATERIALIZED VIEW core.agent_performance_5min; RESET ROLE$$, '42501', NULL, 'may not refresh the view directly');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT vault.rotate_key(); RESET ROLE$$, '42501', NULL, 'may not rotate keys');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT cdc.skip(); RESET ROLE$$, '42501', NULL, 'may not discard CDC changes');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; DELETE FROM ops.cron_jobs; RESET ROLE$$, '42501', NULL, 'may not change schedules');
-- the drain: only through outbox.drain (SECURITY DEFINER); its parts and pg_cron's procedure are the owner's
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT outbox._record_drain(now(), 1000, 0, NULL); RESET ROLE$$, '42501', NULL,
                 'may not write drain records (outbox._record_drain)');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT outbox._drain_batch(10, '', 5); RESET ROLE$$, '42501', NULL,
                 'may not call the drain''s batch step directly');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; CALL outbox.drain_all(); RESET ROLE$$, '42501', NULL,
                 'may not run pg_cron''s drain procedure (it runs as the owner)');
SELECT ok(has_function_privilege('svc_singularity', 'outbox.drain(int, int, int)', 'EXECUTE'),
          'may drain through outbox.drain (orchestrator autonomous drain-now)');
SELECT is((SELECT run_as FROM ops.cron_jobs WHERE jobname = 'drain_outbox'), 'own_singularity'::name,
          'the drain_outbox schedule runs as the owner');

-- schedules: the seed's intervals plus the drain, inbox and heartbeat every minute; re-applying is an upsert
SELECT results_eq($$SELECT jobname, schedule FROM ops.cron_jobs ORDER BY jobname$$,
    $$VALUES ('archive_tasks', '43 2 * * *'), ('assign_tasks', '*/2 * * * *'), ('cleanup_logs', '13 */6 * * *'),
             ('consume_inbox', '* * * * *'), ('drain_outbox', '* * * * *'), ('heartbeat', '* * * * *'),
             ('learn_patterns', '*/5 * * * *'), ('refresh_metrics', '*/30 * * * *'), ('sync_learning', '*/10 * * * *'),
             ('update_knowledge', '7 * * * *')$$, 'schedules: names and intervals');
\i sql/procedures/singularity/95_cron.sql
SELECT is((SELECT count(*)::int FROM ops.cron_jobs WHERE command = format('SELECT core.run_job(%L)', jobname)
                                                        OR (jobname = 'drain_outbox' AND command = 'CALL outbox.drain_all()')), 10,
          'schedules: re-applied without duplicates, each one call (the drain commits per batch)');

SELECT * FROM finish();
ROLLBACK;
