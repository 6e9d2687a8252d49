-- A request id reused for other content, or by another sender, is a conflict (DESIGN.md 8b): the
-- stored result of someone else's code is never returned, and the code of the reuse never runs.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(9);

SELECT is(genesis.claim('c1', 'a', 'python', 'run', 'sha-A', '{}', 'w1', 2, 'svc_singularity', 'h-A') ->> 'action', 'run',
          'a new id with its sender and request hash runs');
SELECT ok((SELECT sender = 'svc_singularity' AND request_sha256 = 'h-A' FROM genesis.executions WHERE request_id = 'c1'),
          'the execution records who asked and the hash of what was asked');
SELECT genesis.finish_execution('c1', '{"exit_code": 0, "stdout": "SECRET-A", "request_id": "c1"}');
SELECT is(genesis.claim('c1', 'a', 'python', 'run', 'sha-A', '{}', 'w2', 2, 'svc_singularity', 'h-A') ->> 'action', 'done',
          'the same request again (same sender, same hash) gets the stored result');
SELECT is(genesis.claim('c1', 'a', 'bash', 'run', 'sha-B', '{}', 'w2', 2, 'svc_singularity', 'h-B') - 'limits',
          '{"action": "conflict", "reason": "request id c1 was already used for a different job; send this one with a new id (leave \"id\" out and the bus assigns one)"}'::jsonb,
          'the same id with other code is a conflict, not the stored result');
SELECT is(genesis.claim('c1', 'a', 'python', 'run', 'sha-A', '{}', 'w2', 2, 'svc_singularity_x', 'h-A') ->> 'action', 'conflict',
          'the same id and content from another sender is a conflict');
SELECT is((SELECT runs FROM genesis.executions WHERE request_id = 'c1'), 1, 'no conflict started a run');
-- A row from before hashes were recorded: the code hash, language and mode decide.
INSERT INTO genesis.executions (request_id, language, mode, code_sha256, lease_until, status, finished_at, result)
VALUES ('old1', 'python', 'run', 'sha-old', now(), 'finished', now(), '{"stdout": "old"}');
SELECT is(genesis.claim('old1', 'a', 'python', 'run', 'sha-old', '{}', 'w1', 2, 'svc_singularity', 'h-x') ->> 'action', 'done',
          'a legacy row answers a redelivery of the same code');
SELECT is(genesis.claim('old1', 'a', 'python', 'run', 'sha-new', '{}', 'w1', 2, 'svc_singularity', 'h-y') ->> 'action', 'conflict',
          'and refuses other code under its id');
SELECT is(genesis.start_execution('c2', 'a', 'python', 'run', 'sha', '{}', 'w1', 30) ->> 'action', 'run',
          'a worker of the previous version (no sender, no hash) still claims');

SELECT * FROM finish();
ROLLBACK;
