-- The operator console's nexus functions (nexus.console_*): LLM calls filtered, cost per day and model,
-- decisions with who, when and comment. svc_nexus calls them; it reads none of the tables behind them,
-- and no other service role may call them.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(19);

SELECT ok(has_function_privilege('svc_nexus', f, 'EXECUTE'), 'svc_nexus may call ' || f)
  FROM unnest(ARRAY['nexus.console_calls(text, text, text, int, int)', 'nexus.console_call_choices(int)',
                    'nexus.console_cost(int)', 'nexus.console_decisions(text, text, text, int, int)']) AS f;
SELECT is_definer('nexus', 'console_calls', ARRAY['text', 'text', 'text', 'integer', 'integer'], 'console_calls is SECURITY DEFINER');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.llm_calls; RESET ROLE', '42501', NULL,
                 'svc_nexus may not read nexus.llm_calls itself');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.hitl_decisions; RESET ROLE', '42501', NULL,
                 'svc_nexus may not read nexus.hitl_decisions itself');
SELECT throws_ok('SET LOCAL ROLE svc_nexus; DELETE FROM nexus.llm_calls; RESET ROLE', '42501', NULL,
                 'svc_nexus may not delete calls');
SELECT ok(NOT has_function_privilege('svc_singularity', 'nexus.console_calls(text, text, text, int, int)', 'EXECUTE'),
          'svc_singularity may not call nexus.console_calls');

TRUNCATE nexus.llm_calls;
INSERT INTO nexus.llm_calls (request_id, agent_id, model, tokens_in, tokens_out, cost, status, error, created_at) VALUES
    ('r1', 'a1', 'm-a', 10, 5, 0.5, 'ok', NULL, now() - interval '2 days'),
    ('r2', 'a1', 'm-b', 10, 5, 0.25, 'error', 'boom', now() - interval '1 day'),
    ('r3', 'a2', 'm-a', 10, 5, 0.125, 'ok', NULL, now()),
    ('r4', 'a2', 'm-a', 1, 1, 0, 'refused', 'budget', now());
SET LOCAL ROLE svc_nexus;
SELECT is((SELECT count(*) FROM nexus.console_calls()), 4::bigint, 'every call without filters');
SELECT is((SELECT count(*) FROM nexus.console_calls('m-a')), 3::bigint, 'filtered by model');
SELECT is((SELECT count(*) FROM nexus.console_calls(NULL, 'a2', 'ok')), 1::bigint, 'filtered by agent and status');
SELECT is((SELECT max(total) FROM nexus.console_calls(NULL, NULL, NULL, 1, 0)), 4::bigint, 'a page carries the total');
SELECT is((SELECT sum(cost) FROM nexus.console_cost(14) WHERE model = 'm-a'), 0.625, 'cost per model');
SELECT is((SELECT count(DISTINCT day) FROM nexus.console_cost(14)), 3::bigint, 'cost per day: three days');
SELECT is((SELECT array_agg(value ORDER BY value) FROM nexus.console_call_choices(30) WHERE field = 'model'),
          ARRAY['m-a', 'm-b'], 'the model choices');
RESET ROLE;

TRUNCATE nexus.hitl_decisions, nexus.hitl_items;
INSERT INTO nexus.hitl_items (request_id, kind, queue, msg_id, read_ct, lease_until, reply_to, agent_id, payload, status, decided_at)
VALUES ('h1', 'approval', 'approval_requests', 1, 1, now(), 'approval_responses', 'a1', '{"file_path": "x.py"}', 'published', now()),
       ('h2', 'question', 'question_requests', 2, 1, now(), 'question_responses', 'a2', '{"question": "why?"}', 'published', now());
INSERT INTO nexus.hitl_decisions (request_id, decided_by, approved, comment) VALUES ('h1', 'alice', true, 'fine');
INSERT INTO nexus.hitl_decisions (request_id, decided_by, response) VALUES ('h2', 'bob', 'because');
SET LOCAL ROLE svc_nexus;
SELECT is((SELECT count(*) FROM nexus.console_decisions()), 2::bigint, 'every decision');
SELECT is((SELECT comment FROM nexus.console_decisions('approval')), 'fine', 'approvals only, with the comment');
SELECT is((SELECT subject FROM nexus.console_decisions(NULL, 'bob')), 'why?', 'by who decided');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
