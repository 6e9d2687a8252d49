-- Metrics view, log cleanup, archiving and heartbeat: each touches only what it should.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(15);
TRUNCATE core.agents, core.agent_knowledge, core.tasks, core.tasks_archive, core.analysis_results, core.agent_sessions, core.logs,
         outbox.messages CASCADE;

INSERT INTO core.agents (id, capacity) VALUES ('m1', 10);
SELECT date_bin('5 minutes', now() - interval '1 hour', timestamptz '2000-01-01 00:00:00+00') AS b \gset
INSERT INTO core.tasks (id, status, assigned_agent, assigned_at, completed_at) VALUES
    ('old-done', 'completed', 'm1', now() - interval '10 days 1 minute', now() - interval '10 days'),
    ('old-fail', 'failed', 'm1', now() - interval '9 days 1 minute', now() - interval '9 days'),
    ('new-done', 'completed', 'm1', :'b', :'b'::timestamptz + interval '30 seconds'),
    ('new-done2', 'completed', 'm1', :'b'::timestamptz + interval '1 minute', :'b'::timestamptz + interval '2 minutes'),
    ('old-running', 'running', 'm1', now() - interval '20 days', NULL);
INSERT INTO core.tasks (id) VALUES ('old-pending');
UPDATE core.tasks SET created_at = now() - interval '30 days';

SELECT ok(core.refresh_agent_performance() >= 1, 'metrics: refresh (first time, not concurrently)');
SELECT results_eq($$SELECT completed, failed, avg_seconds FROM core.agent_performance_5min
                     WHERE agent_id = 'm1' AND bucket = '$$ || :'b' || $$'$$,
                  $$VALUES (2::bigint, 0::bigint, 45.000::numeric)$$, 'metrics: two tasks in one 5-minute bucket, mean 45 s');
SELECT is((SELECT count(*)::int FROM core.agent_performance_5min WHERE agent_id = 'm1' AND bucket < now() - interval '8 days'),
          0, 'metrics: the 7-day window leaves out tasks finished 9 and 10 days ago');
SELECT lives_ok($$SELECT core.refresh_agent_performance()$$, 'metrics: refresh again (concurrently)');

SELECT is(core.archive_completed_tasks(), 2::bigint, 'archive: the two finished tasks older than 7 days');
SELECT results_eq($$SELECT id FROM core.tasks ORDER BY id$$,
                  $$VALUES ('new-done'), ('new-done2'), ('old-pending'), ('old-running')$$,
                  'archive: recent, pending and running tasks stay');
SELECT results_eq($$SELECT id, status FROM core.tasks_archive ORDER BY id$$,
                  $$VALUES ('old-done', 'completed'), ('old-fail', 'failed')$$, 'archive: moved rows keep their status');
SELECT is((SELECT load FROM core.agents WHERE id = 'm1'), 1, 'archive: the running task still counts as load');

INSERT INTO core.logs (at, level, message) VALUES
    (now() - interval '8 days', 'info', 'old info'), (now() - interval '8 days', 'debug', 'old debug'),
    (now() - interval '8 days', 'error', 'old error'), (now() - interval '31 days', 'error', 'ancient error'),
    (now() - interval '1 day', 'info', 'new info');
SELECT is(core.cleanup_logs(), 3::bigint, 'cleanup: info/debug over 7 days and errors over 30 days');
SELECT results_eq($$SELECT message FROM core.logs ORDER BY message$$, $$VALUES ('new info'), ('old error')$$,
                  'cleanup: recent logs and errors under 30 days stay');

SELECT matches(core.queue_heartbeat(), '^[0-7][0-9A-Z]{25}$', 'heartbeat: queued with a ULID');
SELECT is((SELECT message->>'type' FROM outbox.messages WHERE queue = 'instance_heartbeat'), 'heartbeat', 'heartbeat: type');
SELECT is((SELECT (message->'stats'->>'agents')::int FROM outbox.messages WHERE queue = 'instance_heartbeat'), 1,
          'heartbeat: carries stats');

SELECT matches(core.run_job('heartbeat'), '^ok: heartbeat ', 'run_job: ok result');
SELECT throws_ok($$SELECT core.run_job('nope')$$, '22023', 'unknown job nope', 'run_job: unknown job refused');

SELECT * FROM finish();
ROLLBACK;
