-- Retention of executions: the redelivery guard (a finished request id is answered from its row)
-- must outlive any redelivery, so genesis.prune_executions refuses fewer days than the minimum in
-- ops.settings (prune_executions_min_days, 7 by default), which only the owner can change.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(10);

INSERT INTO genesis.executions (request_id, language, mode, code_sha256, lease_until, status, finished_at, result) VALUES
    ('ret-new', 'python', 'run', 'sha', now(), 'finished', now() - interval '1 hour', '{"exit_code": 0}'),
    ('ret-6d', 'python', 'run', 'sha', now(), 'finished', now() - interval '6 days', '{"exit_code": 0}'),
    ('ret-old', 'python', 'run', 'sha', now(), 'finished', now() - interval '40 days', '{"exit_code": 0}');

SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT genesis.prune_executions(0); RESET ROLE$$, '22023',
                 'genesis.prune_executions: 0 days is below the minimum of 7 days (ops.settings prune_executions_min_days)',
                 'svc_genesis: prune_executions(0) is refused');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT genesis.prune_executions(6); RESET ROLE$$, '22023', NULL,
                 'svc_genesis: prune_executions(6) is refused too (one day under the minimum)');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT genesis.prune_executions(NULL); RESET ROLE$$, '22023', NULL,
                 'svc_genesis: prune_executions(NULL) is refused');
SELECT is((SELECT count(*)::int FROM genesis.executions WHERE request_id IN ('ret-new', 'ret-6d')), 2,
          'recent executions survive: a redelivery is still answered from its row');
SELECT is((SELECT value FROM ops.settings WHERE key = 'prune_executions_min_days'), '7',
          'the minimum age is a setting: prune_executions_min_days = 7');

SET LOCAL ROLE svc_genesis;
SELECT genesis.prune_executions(30) AS pruned \gset
RESET ROLE;
SELECT is(:pruned, 1, 'svc_genesis: prune_executions(30) (the schedule''s call) deletes the 40-day-old execution');

SELECT throws_ok($$SET LOCAL ROLE svc_genesis; UPDATE ops.settings SET value = '0' WHERE key = 'prune_executions_min_days'; RESET ROLE$$,
                 '42501', NULL, 'svc_genesis cannot lower the minimum');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; DELETE FROM genesis.executions; RESET ROLE$$, '42501', NULL,
                 'svc_genesis cannot delete executions directly');

-- the owner decides the minimum
SET LOCAL ROLE own_genesis;
UPDATE ops.settings SET value = '5' WHERE key = 'prune_executions_min_days';
RESET ROLE;
SET LOCAL ROLE svc_genesis;
SELECT genesis.prune_executions(5) AS pruned5 \gset
RESET ROLE;
SELECT is(:pruned5, 1, 'after the owner lowered the minimum to 5 days, prune_executions(5) deletes the 6-day-old one');
SELECT is((SELECT count(*)::int FROM genesis.executions WHERE request_id = 'ret-new'), 1, '... and the recent one stays');

SELECT * FROM finish();
ROLLBACK;
