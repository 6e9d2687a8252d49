-- Assignment: capacity, priority order, round-robin, only active agents, load bookkeeping,
-- task transitions and their errors.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(19);
TRUNCATE core.agents, core.agent_knowledge, core.tasks, core.tasks_archive, core.analysis_results, core.agent_sessions, outbox.messages CASCADE;

INSERT INTO core.agents (id, capacity, status) VALUES ('big', 2, 'active'), ('small', 1, 'active'),
    ('paused', 5, 'paused'), ('full', 1, 'active');
INSERT INTO core.tasks (id, priority, status, assigned_agent, assigned_at) VALUES ('t-run', 100, 'running', 'full', now());
INSERT INTO core.tasks (id, priority) VALUES ('t10', 10), ('t9', 9), ('t5', 5), ('t1', 1), ('t0', 0), ('tm1', -1);

SELECT is((SELECT load FROM core.agents WHERE id = 'full'), 1, 'load counts a task inserted as running');
SELECT is(core.assign_pending_tasks(), 3, 'assign: 3 free slots (big 2, small 1; full and paused none)');
SELECT results_eq($$SELECT id, assigned_agent FROM core.tasks WHERE status = 'assigned' ORDER BY priority DESC$$,
                  $$VALUES ('t10', 'big'), ('t9', 'small'), ('t5', 'big')$$,
                  'assign: highest priorities first, spread round-robin');
SELECT is((SELECT count(*)::int FROM core.tasks WHERE status = 'pending'), 3, 'assign: lower priorities wait');
SELECT results_eq($$SELECT id, load FROM core.agents ORDER BY id$$,
                  $$VALUES ('big', 2), ('full', 1), ('paused', 0), ('small', 1)$$, 'assign: loads follow');
SELECT ok((SELECT bool_and(assigned_at IS NOT NULL) FROM core.tasks WHERE status = 'assigned'), 'assign: assigned_at set');
SELECT is(core.assign_pending_tasks(), 0, 'assign again: no capacity left, nothing assigned');

SELECT lives_ok($$SELECT core.start_task('t10')$$, 'start: assigned -> running');
SELECT lives_ok($$SELECT core.finish_task('t10', '{"ok": true}')$$, 'finish: running -> completed');
SELECT results_eq($$SELECT status, result, completed_at IS NOT NULL FROM core.tasks WHERE id = 't10'$$,
                  $$VALUES ('completed', '{"ok": true}'::jsonb, true)$$, 'finish: status, result, completed_at');
SELECT is((SELECT load FROM core.agents WHERE id = 'big'), 1, 'finish: frees one slot of big');
SELECT is(core.assign_pending_tasks(), 1, 'assign: the freed slot takes the next task');
SELECT is((SELECT assigned_agent FROM core.tasks WHERE id = 't1'), 'big', 'assign: t1 (priority 1) went to big');

SELECT lives_ok($$SELECT core.fail_task('t9', 'boom')$$, 'fail: assigned -> failed');
SELECT is((SELECT result->>'error' FROM core.tasks WHERE id = 't9'), 'boom', 'fail: the error is the result');
SELECT is(core.assign_pending_tasks(1), 1, 'assign with a limit');

SELECT throws_ok($$SELECT core.finish_task('nope', '{}')$$, 'P0002', 'no task nope', 'finishing an unknown task says so');
SELECT throws_ok($$SELECT core.finish_task('tm1', '{}')$$, '55000', 'cannot finish task tm1: it is pending, not assigned or running',
                 'finishing a pending task says so');
SELECT throws_ok($$INSERT INTO core.tasks (id, status, assigned_agent) VALUES ('tx', 'assigned', 'ghost')$$, '23503', NULL,
                 'a task for a missing agent is refused');

SELECT * FROM finish();
ROLLBACK;
