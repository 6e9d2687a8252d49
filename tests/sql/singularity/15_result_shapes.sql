-- Analysis results as agents write them (seed 003: an INSERT naming `learned: false`, `result` being
-- whatever the analysis returned): every shape's patterns are learned.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);
SELECT is(array_agg(p->>'key' ORDER BY p->>'key'), ARRAY['a', 'b'], 'patterns: a list of objects and strings')
  FROM core._result_patterns('{"patterns": [{"key": "a"}, "b", {"nokey": 1}, 7]}') p;
SELECT is(array_agg(p->>'key'), ARRAY['c'], 'pattern: one') FROM core._result_patterns('{"pattern": "c"}') p;
SELECT is(array_agg(p->>'key'), ARRAY['d'], 'a single pattern object') FROM core._result_patterns('{"key": "d", "kind": "x"}') p;
SELECT is(array_agg(p->>'key' ORDER BY p->>'key'), ARRAY['e', 'f'], 'a bare list') FROM core._result_patterns('["e", {"key": "f"}]') p;
SELECT is(array_agg(p->>'key'), ARRAY['g'], 'a bare key') FROM core._result_patterns('"g"') p;
SELECT is(count(*)::int, 0, 'anything else has no patterns') FROM core._result_patterns('{"summary": "fine"}') p;
INSERT INTO core.agents (id) VALUES ('seed-agent') ON CONFLICT DO NOTHING;
SELECT lives_ok($$SET LOCAL ROLE svc_singularity;
                  INSERT INTO core.analysis_results (agent_id, result, confidence, learned)
                  VALUES ('seed-agent', '{"pattern": "elixir.fstring"}', 0.95, false)$$,
                'the seed''s insert naming learned: false is accepted');
SELECT * FROM finish();
ROLLBACK;
