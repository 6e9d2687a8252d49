-- genesis: Elixir and Rust jobs (seed 002) are recorded like any other language (the language list lives in
-- the sandbox, orchestrator/genesis/sandbox/languages.py, not in SQL), and memory_mb says what it bounds.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(5);

SELECT is(genesis.claim('lang-ex', 'a', 'elixir', 'run', 'sha', '{}', 'w1', 2) - 'limits',
          '{"action": "run", "runs": 1}'::jsonb, 'an elixir job is claimed');
SELECT is(genesis.claim('lang-rs', 'a', 'rust', 'lint', 'sha', '{"memory_mb": 512}', 'w1', 2) - 'limits',
          '{"action": "run", "runs": 1}'::jsonb, 'a rust job is claimed');
SELECT results_eq($$SELECT language, mode, (limits ->> 'memory_mb')::int FROM genesis.executions
                    WHERE request_id IN ('lang-ex', 'lang-rs') ORDER BY request_id$$,
                  $$VALUES ('elixir', 'run', 256), ('rust', 'lint', 512)$$,
                  'their language, mode and limits are recorded');
SELECT is(genesis.finish_execution('lang-rs', '{"exit_code": 1, "error": "exit code 1: error: unused variable: `x`"}')
          ->> 'error', 'exit code 1: error: unused variable: `x`', 'a finished rust lint keeps its error');
SELECT ok((SELECT description LIKE '%whole job%' AND description LIKE '%+512 MB elixir%rust%'
             FROM genesis.limits WHERE name = 'memory_mb'),
          'memory_mb: the whole job, and the address space elixir and rust get on top');

SELECT * FROM finish();
ROLLBACK;
