-- nexus.admit_many / settle_many (the worker's one call per read): the same decisions as admit / settle
-- one by one, in order, as svc_nexus; the budget is shared across the batch; other roles may not call them.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(10);

-- 40 chars = 10 prompt tokens + max_tokens 100 = 110 reserved per request; room for 2
SELECT nexus.set_provider('pb', 'openai', 'http://127.0.0.1:9/v1', NULL);
SELECT nexus.set_model('mb', 'pb', 'remote-b', 1, 2, 100);
SELECT nexus.set_route('batch', ARRAY['mb']);
SELECT nexus.set_budget('agb', 250, NULL);
SET LOCAL ROLE svc_nexus;
SELECT nexus.admit_many('[
  {"request_id": "b1", "agent_id": "agb", "task_type": "batch", "prompt_chars": 40, "sender": "svc_singularity", "sha256": "h1"},
  {"request_id": "b2", "agent_id": "agb", "task_type": "batch", "prompt_chars": 40, "sender": "svc_singularity", "sha256": "h2"},
  {"request_id": "b3", "agent_id": "agb", "task_type": "batch", "prompt_chars": 40, "sender": "svc_singularity", "sha256": "h3"},
  {"request_id": "b1", "agent_id": "agb", "task_type": "batch", "prompt_chars": 40, "sender": "svc_singularity", "sha256": "other"}
]') AS adm \gset
RESET ROLE;
SELECT is(jsonb_array_length(:'adm'::jsonb), 4, 'one admission per request, in order');
SELECT is(ARRAY(SELECT (e->>'admitted')::boolean FROM jsonb_array_elements(:'adm'::jsonb) e), ARRAY[true, true, false, false],
          'two fit the budget; the third is refused; b1 again with other content is refused');
SELECT matches((:'adm'::jsonb)->2->>'reason', '^budget exceeded for agent agb', 'the refusal says why');
SELECT is((:'adm'::jsonb)->3->>'conflict', 'true', 'an id reused within the batch for other content is a conflict');
SELECT is((:'adm'::jsonb)->0->'candidates'->0->>'model', 'mb', 'an admission carries the plan');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'agb'), 220::bigint, 'two reservations are held');

SET LOCAL ROLE svc_nexus;
SELECT nexus.settle_many('[
  {"request_id": "b1", "agent_id": "agb", "task_type": "batch",
   "calls": [{"attempt": 1, "provider": "pb", "model": "mb", "tokens_in": 10, "tokens_out": 5, "latency_ms": 3, "status": "ok"}]},
  {"request_id": "b2", "agent_id": "agb", "task_type": "batch",
   "calls": [{"attempt": 1, "provider": "pb", "model": "mb", "status": "error", "error": "HTTP 500"}]}
]') AS tot \gset
RESET ROLE;
SELECT is(ARRAY(SELECT e->>'cost' FROM jsonb_array_elements(:'tot'::jsonb) e), ARRAY['0.02000000', '0.00000000'],
          'settle_many prices each request''s attempts, in order');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'agb'), 15::bigint,
          'both reservations became the real use');
SELECT is((SELECT count(*)::int FROM nexus.llm_calls WHERE request_id IN ('b1', 'b2') AND status <> 'refused'), 2,
          'every attempt is logged');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT nexus.admit_many('[]'); RESET ROLE$$, '42501', NULL,
                 'another service role may not admit through nexus');

SELECT * FROM finish();
ROLLBACK;
