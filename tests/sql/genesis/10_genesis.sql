-- genesis: schema, limits a request can lower but never raise, claiming a request id
-- (run / done / busy / crashed -> run again), the first result wins, and what svc_genesis may NOT do.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(27);

SELECT has_schema('genesis', 'schema genesis exists');
SELECT has_table('genesis', t, format('table genesis.%s exists', t)) FROM unnest(ARRAY['limits', 'executions']) t;

-- limits
SELECT is((genesis.effective_limits('{}') ->> 'timeout_s')::numeric, 10::numeric, 'no request: the default timeout');
SELECT is((genesis.effective_limits('{"timeout_s": 2}') ->> 'timeout_s')::numeric, 2::numeric, 'a request may lower a limit');
SELECT is((genesis.effective_limits('{"timeout_s": 100000, "memory_mb": 99999}') ->> 'timeout_s')::numeric, 120::numeric,
          'a request cannot raise a limit above the operator maximum');
SELECT is((genesis.effective_limits('{"memory_mb": 99999}') ->> 'memory_mb')::numeric, 2048::numeric, 'memory capped at its maximum');
SELECT is((genesis.effective_limits(NULL) ->> 'processes')::numeric, 64::numeric, 'NULL means all defaults');
SELECT throws_ok($$SELECT genesis.effective_limits('{"bogus": 1}')$$, '22023', 'unknown limit(s): bogus',
                 'an unknown limit is refused by name');
SELECT throws_ok($$SELECT genesis.effective_limits('{"timeout_s": -1}')$$, '22023', 'limit timeout_s must be a positive number, got -1',
                 'a negative limit is refused');
SELECT throws_ok($$SELECT genesis.effective_limits('{"timeout_s": "5"}')$$, '22023', NULL, 'a string limit is refused');
SELECT throws_ok($$SELECT genesis.effective_limits('[1]')$$, '22023', 'limits must be a JSON object, got array', 'limits must be an object');
SELECT genesis.set_limit('timeout_s', 5, 30);
SELECT is((genesis.effective_limits('{"timeout_s": 60}') ->> 'timeout_s')::numeric, 30::numeric, 'the operator lowers the maximum: requests follow');
SELECT throws_ok($$SELECT genesis.set_limit('timeout_s', 50, 30)$$, '22023', NULL, 'default above maximum is refused');
SELECT throws_ok($$SELECT genesis.set_limit('nope', 1, 2)$$, '22023', 'unknown limit nope', 'an unknown limit cannot be set');

-- claiming and finishing
SELECT is(genesis.start_execution('r1', 'a', 'python', 'run', 'sha', '{}', 'w1', 30) ->> 'action', 'run', 'a new request id runs');
SELECT is(genesis.start_execution('r1', 'a', 'python', 'run', 'sha', '{}', 'w2', 30) ->> 'action', 'busy',
          'the same id while its worker holds the lease is busy');
SELECT is(genesis.finish_execution('r1', '{"exit_code": 0, "stdout": "hi", "request_id": "r1"}') ->> 'stdout', 'hi',
          'finishing stores and returns the result');
SELECT is(genesis.finish_execution('r1', '{"exit_code": 1, "stdout": "second"}') ->> 'stdout', 'hi',
          'a second finish does not overwrite: the first result wins');
SELECT is(genesis.start_execution('r1', 'a', 'python', 'run', 'sha', '{}', 'w3', 30),
          '{"action": "done", "result": {"exit_code": 0, "stdout": "hi", "request_id": "r1"}}'::jsonb,
          'a redelivered finished request returns the stored result instead of running');
SELECT genesis.start_execution('r2', 'a', 'python', 'run', 'sha', '{}', 'w1', 30);
UPDATE genesis.executions SET lease_until = now() - interval '1 second' WHERE request_id = 'r2';
SELECT is(genesis.start_execution('r2', 'a', 'python', 'run', 'sha', '{}', 'w2', 30), '{"action": "run", "runs": 2}'::jsonb,
          'a running request whose worker died (lease over) runs again');
SELECT is(genesis.claim('r3', 'a', 'python', 'run', 'sha', '{"timeout_s": 4, "memory_mb": 1e9}', 'w1', 2) - 'limits',
          '{"action": "run", "runs": 1}'::jsonb, 'claim: limits and the claim in one call');
SELECT ok((SELECT lease_until BETWEEN now() + interval '5.9 s' AND now() + interval '6.1 s'
             AND limits ->> 'memory_mb' = '2048' FROM genesis.executions WHERE request_id = 'r3'),
          'claim: lease = timeout + margin, limits capped and stored');
SELECT throws_ok($$SELECT genesis.claim('r4', 'a', 'python', 'run', 'sha', '{"nope": 1}', 'w1', 2)$$, '22023', NULL,
                 'claim with bad limits is refused and records nothing');
SELECT throws_ok($$SELECT genesis.finish_execution('never', '{}')$$, 'P0002', 'no execution never was started',
                 'finishing an unknown id is refused');

-- what svc_genesis may not do
SELECT throws_ok('SET LOCAL ROLE svc_genesis; SELECT * FROM genesis.executions; RESET ROLE', '42501', NULL,
                 'svc_genesis cannot read the executions table directly');
SELECT throws_ok('SET LOCAL ROLE svc_genesis; SELECT genesis.set_limit(''timeout_s'', 1, 1000); RESET ROLE', '42501', NULL,
                 'svc_genesis cannot change the operator limits');

SELECT * FROM finish();
ROLLBACK;
