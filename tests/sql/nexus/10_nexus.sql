-- nexus: schema, routing plan, atomic budget admission and settling, HITL claim/decide/quorum/expire,
-- and what svc_nexus may NOT do (tables, configuration, password hashes).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(45);

SELECT has_schema('nexus', 'schema nexus exists');
SELECT has_table('nexus', t, format('table nexus.%s exists', t))
  FROM unnest(ARRAY['providers', 'models', 'routes', 'budgets', 'budget_usage', 'reservations', 'llm_calls',
                    'users', 'sessions', 'hitl_items', 'hitl_decisions']) AS t;

-- the shipped default: everything goes to the offline provider
SELECT results_eq($$SELECT model, kind FROM nexus.plan('anything')$$, $$VALUES ('offline'::text, 'offline'::text)$$,
                  'with nothing configured every task type routes to the offline provider');

-- a route with a fallback; a requested model goes first; a disabled provider is skipped
SELECT nexus.set_provider('p1', 'openai', 'http://127.0.0.1:9/v1', 'P1_KEY');
SELECT nexus.set_provider('p2', 'anthropic', 'http://127.0.0.1:9', NULL);
SELECT nexus.set_model('m1', 'p1', 'remote-1', 1, 2, 100);
SELECT nexus.set_model('m2', 'p2', 'remote-2', 1, 2, 100);
SELECT nexus.set_route('chat', ARRAY['m1', 'm2']);
SELECT results_eq($$SELECT pos, model FROM nexus.plan('chat')$$, $$VALUES (1, 'm1'::text), (2, 'm2'::text)$$,
                  'a route lists its models in order');
SELECT results_eq($$SELECT model FROM nexus.plan('chat', 'm2')$$, $$VALUES ('m2'::text), ('m1'::text)$$,
                  'a requested model goes first, the route follows without repeating it');
UPDATE nexus.providers SET enabled = false WHERE name = 'p1';
SELECT results_eq($$SELECT model FROM nexus.plan('chat')$$, $$VALUES ('m2'::text)$$, 'a disabled provider is skipped');
UPDATE nexus.providers SET enabled = true WHERE name = 'p1';
SELECT throws_ok($$SELECT nexus.set_route('chat', ARRAY['nope'])$$, '23503', 'unknown model(s): nope',
                 'a route to an unknown model is refused with its name');

-- budgets: 40 chars = 10 prompt tokens + max_tokens 100 = 110 reserved per request (worst case over candidates)
SELECT nexus.set_budget('ag', 200, NULL);
SELECT is((nexus.admit('r1', 'ag', 'chat', NULL, 40, NULL))->>'admitted', 'true', 'the first request fits the budget');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'ag'), 110::bigint, 'its worst case is reserved');
SELECT is((nexus.admit('r1', 'ag', 'chat', NULL, 40, NULL))->>'admitted', 'true', 'a redelivery keeps its reservation');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'ag'), 110::bigint, '... without reserving twice');
SELECT matches((nexus.admit('r2', 'ag', 'chat', NULL, 40, NULL))->>'reason', '^budget exceeded for agent ag',
               'a second request past the limit is refused and told why');
SELECT is((SELECT count(*)::int FROM nexus.llm_calls WHERE request_id = 'r2' AND status = 'refused'), 1,
          'the refusal is logged in llm_calls');
SELECT is((nexus.settle('r1', 'ag', 'chat',
    '[{"attempt": 1, "provider": "p1", "model": "m1", "status": "error", "error": "HTTP 500"},
      {"attempt": 2, "provider": "p1", "model": "m1", "tokens_in": 10, "tokens_out": 5, "latency_ms": 3, "status": "ok"}]'))->>'cost',
    '0.02000000', 'settle prices the successful attempt: (10 x 1 + 5 x 2) / 1000');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'ag'), 15::bigint, 'the reservation became the real use');
SELECT is((SELECT count(*)::int FROM nexus.reservations), 0, 'no reservation is left after settling');
SELECT is((SELECT array_agg(status ORDER BY id) FROM nexus.llm_calls WHERE request_id = 'r1'), ARRAY['error', 'ok'],
          'every attempt is logged in order');
SELECT is((nexus.admit('r3', 'ag', 'chat', NULL, 40, NULL))->>'admitted', 'true', 'room freed by settling is usable again');

-- a reservation never settled (its worker died, the request was dead-lettered) is given back later
UPDATE nexus.reservations SET created_at = now() - interval '2 hours' WHERE request_id = 'r3';
SELECT is(nexus.release_stale_reservations(), 1, 'a stale reservation is released');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'ag'), 15::bigint, '... and its tokens given back');
SELECT is((SELECT command FROM ops.cron_jobs WHERE jobname = 'release_reservations'),
          'SELECT nexus.release_stale_reservations()', 'a schedule releases stale reservations');

-- what svc_nexus may not do
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.providers; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot read the tables directly');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.users; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot read password hashes in bulk');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.set_budget('ag', NULL, NULL); RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot change budgets');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.user_set('x', 'y'); RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot add users');

-- HITL: claim, redelivery, quorum, options, expiry
SELECT is(nexus.hitl_claim('approval', 'approval_requests', 7, 1, 300,
          '{"id": "A1", "agent_id": "ag", "file_path": "f", "diff": "+x", "quorum": 2}', 'approval_responses', 3600),
          'pending', 'a claimed approval is pending');
SELECT is(nexus.hitl_claim('approval', 'approval_requests', 7, 2, 300,
          '{"id": "A1", "agent_id": "ag", "file_path": "f", "diff": "+x", "quorum": 2}', 'approval_responses', 3600),
          'pending', 'its redelivery re-attaches to the same item');
SELECT is((SELECT read_ct FROM nexus.hitl_items WHERE request_id = 'A1'), 2, '... now held by the new delivery');
SELECT is(nexus.hitl_decide('A1', 'alice', true, NULL, 'ok')->>'status', 'recorded', 'one approval of two is recorded');
SELECT is(nexus.hitl_decide('A1', 'alice', true, NULL, NULL)->>'status', 'already_voted', 'nobody votes twice');
SELECT is((nexus.hitl_decide('A1', 'bob', true, NULL, NULL)->'decision') - ARRAY['request_sha256', 'request_msg_id', 'agent_id'],
          '{"request_id": "A1", "approved": true, "comment": "alice: ok", "decided_by": "alice,bob"}'::jsonb,
          'the second approval decides, by both');
SELECT is(nexus.hitl_decide('A1', 'carol', false, NULL, NULL)->>'status', 'already_decided', 'a decided item stays decided');
SELECT nexus.hitl_claim('question', 'question_requests', 8, 1, 300,
       '{"id": "Q1", "agent_id": "ag", "question": "which?", "options": ["a", "b"]}', 'question_responses', 3600);
SELECT throws_ok($$SELECT nexus.hitl_decide('Q1', 'alice', NULL, 'c', NULL)$$, '22023', NULL,
                 'an answer outside the options is refused');
SELECT nexus.hitl_claim('approval', 'approval_requests', 9, 1, 300,
       '{"id": "A2", "agent_id": "ag", "file_path": "f", "diff": "+x"}', 'approval_responses', 60);
UPDATE nexus.hitl_items SET deadline = now() - interval '1 second' WHERE request_id = 'A2';
SELECT is(nexus.hitl_expire(), 1, 'an approval past its deadline is expired');
SELECT is((SELECT decision->>'decided_by' || ' ' || (decision->>'approved') FROM nexus.hitl_items WHERE request_id = 'A2'),
          'nexus:timeout false', '... denied by nexus:timeout');

SELECT * FROM finish();
ROLLBACK;
