-- The operator console's bus functions (bus.console_*): what svc_nexus may read and do through them, and
-- what neither it nor any other service role may do (the tables and operator functions behind them).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(40);

SELECT has_function('bus', 'console_messages', ARRAY['text', 'text', 'text', 'integer', 'integer'], 'bus.console_messages exists');
SELECT is_definer('bus', 'console_messages', ARRAY['text', 'text', 'text', 'integer', 'integer'], 'console_messages is SECURITY DEFINER');
SELECT has_function('bus', 'console_schedule_run_now', ARRAY['text', 'text'], 'bus.console_schedule_run_now exists');

-- grants: svc_nexus gets the console functions, no other service does, and nobody gets the tables
SELECT ok(has_function_privilege('svc_nexus', f, 'EXECUTE'), 'svc_nexus may call ' || f)
  FROM unnest(ARRAY['bus.console_messages(text, text, text, int, int)', 'bus.console_queue_counts()',
                    'bus.console_dead_letters(text, int, int)', 'bus.console_dlq_purge(text)', 'bus.console_workers()',
                    'bus.console_schedules()', 'bus.console_schedule_run_now(text, text)']) AS f;
SELECT ok(NOT has_function_privilege('svc_nexus', 'bus._take_run_requests(text[])', 'EXECUTE'),
          'svc_nexus may not take run-now requests (postgres:report_schedules does)');
SELECT ok(NOT has_table_privilege('svc_nexus', 'bus.schedule_run_requests', 'INSERT'),
          'svc_nexus may not write run-now requests but through the function');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; SELECT * FROM bus.schedule_run_requests; RESET ROLE', '42501', NULL,
                 'svc_nexus may not read the run-now table');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; SELECT bus.dlq_purge(NULL); RESET ROLE', '42501', NULL,
                 'svc_nexus may not call the operator''s bus.dlq_purge itself');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; SELECT * FROM bus.heartbeat_status(); RESET ROLE', '42501', NULL,
                 'svc_nexus may not call bus.heartbeat_status itself');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; SELECT * FROM pgmq.q_job_requests; RESET ROLE', '42501', NULL,
                 'svc_nexus may not read a queue table it does not consume');
SELECT throws_ok('SET LOCAL ROLE svc_singularity; SELECT * FROM bus.console_messages(''llm_requests''); RESET ROLE',
                 '42501', NULL, 'svc_singularity may not browse queues');
SELECT throws_ok('SET LOCAL ROLE svc_genesis; SELECT bus.console_dlq_purge(NULL); RESET ROLE', '42501', NULL,
                 'svc_genesis may not purge dead letters');
SELECT throws_ok('SET LOCAL ROLE svc_centralcloud; SELECT bus.console_schedule_run_now(''x'', ''y''); RESET ROLE',
                 '42501', NULL, 'svc_centralcloud may not ask for schedule runs');

-- messages: three waiting, one in flight, one archived; search by msg_id, envelope id, request_id, agent
SELECT pgmq.purge_queue('llm_requests');
DELETE FROM pgmq.a_llm_requests;
SELECT pgmq.send('llm_requests', jsonb_build_object('type', 'llm_request', 'agent_id', 'agent-' || i, 'task_type', 'chat',
                 'messages', '[{"role":"user","content":"hi"}]'::jsonb, 'id', 'env-' || i))
  FROM generate_series(1, 5) i;
SELECT pgmq.archive('llm_requests', (SELECT min(msg_id) FROM pgmq.q_llm_requests));
SELECT count(*) FROM pgmq.read('llm_requests', 300, 1);
SET LOCAL ROLE svc_nexus;
SELECT is((SELECT count(*) FROM bus.console_messages('llm_requests', 'waiting')), 3::bigint, 'three waiting');
SELECT is((SELECT count(*) FROM bus.console_messages('llm_requests', 'in_flight')), 1::bigint, 'one in flight');
SELECT is((SELECT agent_id FROM bus.console_messages('llm_requests', 'archived')), 'agent-1', 'one archived (the first)');
SELECT is((SELECT count(*) FROM bus.console_messages('llm_requests', 'waiting', 'agent-4')), 1::bigint, 'search by agent');
SELECT is((SELECT agent_id FROM bus.console_messages('llm_requests', 'waiting', 'env-5')), 'agent-5', 'search by envelope id');
SELECT is((SELECT count(*) FROM bus.console_messages('llm_requests', 'waiting', 'no''such%s')), 0::bigint,
          'a search with quotes and % finds nothing and breaks nothing');
SELECT is((SELECT array_agg(total) FROM bus.console_messages('llm_requests', 'waiting', NULL, 2, 0)), ARRAY[3, 3]::bigint[],
          'a page of two carries the total of three');
SELECT is((SELECT count(*) FROM bus.console_messages('llm_requests', 'waiting', NULL, 2, 2)), 1::bigint, 'the second page has the third');
SELECT throws_ok($$SELECT * FROM bus.console_messages('q_llm_requests; drop table x', 'waiting')$$, '22023', NULL,
                 'an unknown queue name is refused, never put into SQL');
SELECT throws_ok($$SELECT * FROM bus.console_messages('llm_requests', 'eaten')$$, '22023', NULL, 'an unknown state is refused');
SELECT is((SELECT (waiting, in_flight, archived)::text FROM bus.console_queue_counts() WHERE queue_name = 'llm_requests'),
          '(3,1,1)', 'counts per state');
RESET ROLE;

-- dead letters: listed with error and original message, purged (to the DLQ archive) through the function
SELECT pgmq.purge_queue('dead_letters');
SELECT pgmq.send('dead_letters', '{"queue": "job_requests", "msg_id": 1, "message": {"id": "j1"}, "error": "boom",
                                   "attempts": 5, "sender": "svc_singularity"}'::jsonb);
SELECT pgmq.send('instance_heartbeat', '{"instance_id": "tap", "service": "nexus", "at": "2026-01-01T00:00:00Z",
                                         "stats": {"host": "h1", "pid": 42, "version": "9.9", "in_flight": 2}}'::jsonb);
SET LOCAL ROLE svc_nexus;
SELECT is((SELECT (error, message->>'id', total)::text FROM bus.console_dead_letters()), '(boom,j1,1)',
          'a dead letter with its error, original message and the total');
SELECT is((SELECT stats->>'version' FROM bus.console_workers() WHERE instance_id = 'tap'), '9.9',
          'workers: what the last heartbeat said');
SELECT is(bus.console_dlq_purge('job_requests'), 1::bigint, 'svc_nexus purges the dead letters of a queue through the function');
SELECT is((SELECT count(*) FROM bus.console_dead_letters()), 0::bigint, 'and they are gone from the DLQ');
RESET ROLE;

-- run now: only a reported job, recorded with who asked; the request is visible in console_schedules
INSERT INTO bus.schedule_runs (jobname, schedule, database, active) VALUES ('test:job', '*/5 * * * *', 'nexus', true)
ON CONFLICT (jobname) DO NOTHING;
SET LOCAL ROLE svc_nexus;
SELECT throws_ok($$SELECT bus.console_schedule_run_now('no:such', 'alice')$$, '22023', NULL, 'an unknown job is refused');
SELECT lives_ok($$SELECT bus.console_schedule_run_now('test:job', 'alice')$$, 'a reported job may be asked to run now');
SELECT throws_ok($$SELECT bus.console_schedule_run_now('postgres:report_schedules', 'alice')$$, '22023', NULL,
                 'a job of the postgres database (the superuser''s) is refused');
SELECT is((SELECT run_requested_by FROM bus.console_schedules() WHERE jobname = 'test:job'), 'alice',
          'the schedule shows who asked');
RESET ROLE;
SELECT ok((SELECT 'test:job' IN (SELECT jobname FROM bus._take_run_requests())), 'the owner takes the request once');
SELECT is((SELECT count(*) FROM bus._take_run_requests()), 0::bigint, 'and never twice');

SELECT * FROM finish();
ROLLBACK;
