-- Learning: counts, confidence (mean of results), packages, pattern_detection deltas, knowledge
-- summaries, totals to CentralCloud, and the bad inputs refused.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(27);
TRUNCATE core.agents, core.tasks, core.tasks_archive, core.analysis_results, core.agent_sessions,
         core.learned_patterns, core.agent_knowledge, core.logs, outbox.messages CASCADE;

INSERT INTO core.agents (id, capacity) VALUES ('a1', 1), ('a2', 1);
INSERT INTO core.analysis_results (agent_id, result, confidence) VALUES
    ('a1', '{"patterns": [{"key": "k1", "kind": "syntax", "packages": ["p1"]}, {"key": "k2"}]}', 0.9),
    ('a2', '{"patterns": [{"key": "k1", "packages": ["p2"]}]}', 0.5),
    ('a2', '{"patterns": []}', 0.3);

SELECT is(core.learn_patterns_from_analysis(), 3, 'learn: 3 unlearned results learned (one without patterns)');
SELECT is((SELECT count(*)::int FROM core.analysis_results WHERE NOT learned), 0, 'learn: every result marked learned');
SELECT results_eq($$SELECT key, kind, occurrences, confidence::numeric(4,2), packages FROM core.learned_patterns ORDER BY key$$,
                  $$VALUES ('k1', 'syntax', 2::bigint, 0.70::numeric(4,2), '{p1,p2}'::text[]),
                           ('k2', 'pattern', 1::bigint, 0.90::numeric(4,2), '{}'::text[])$$,
                  'learn: occurrences, mean confidence, kind, union of packages');
SELECT is((SELECT source_instance FROM core.learned_patterns WHERE key = 'k1'), 'default', 'learn: source instance recorded');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE queue = 'pattern_messages'), 1, 'learn: one pattern_detection message queued');
SELECT is((SELECT message->>'type' FROM outbox.messages WHERE queue = 'pattern_messages'), 'pattern_detection', 'learn: message type');
SELECT is((SELECT jsonb_path_query_first(message, '$.patterns[*] ? (@.key == "k1").occurrences')::int
             FROM outbox.messages WHERE queue = 'pattern_messages'), 2, 'learn: message carries the delta for k1');
SELECT ok((SELECT ops.is_ulid(id) FROM outbox.messages WHERE queue = 'pattern_messages'), 'learn: outbox id is a ULID');

SELECT is(core.learn_patterns_from_analysis(), 0, 'learn again: nothing new to learn');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE queue = 'pattern_messages'), 1, 'learn again: no empty message queued');

INSERT INTO core.analysis_results (agent_id, result, confidence) VALUES ('a1', '{"patterns": [{"key": "k1"}]}', 0.1);
SELECT is(core.learn_patterns_from_analysis(), 1, 'learn: a new result');
SELECT results_eq($$SELECT occurrences, confidence::numeric(4,2) FROM core.learned_patterns WHERE key = 'k1'$$,
                  $$VALUES (3::bigint, 0.50::numeric(4,2))$$, 'learn: counts add up, confidence is the running mean');
SELECT is((SELECT jsonb_path_query_first(message, '$.patterns[0].occurrences')::int FROM outbox.messages
            WHERE queue = 'pattern_messages' ORDER BY id DESC LIMIT 1), 1, 'learn: second message is a delta of 1');

-- bad input
SELECT throws_ok($$INSERT INTO core.analysis_results (agent_id, result) VALUES ('a1', '{"summary": "no patterns"}')$$,
                 '23514', NULL, 'a result without a patterns array is refused');
SELECT throws_ok($$INSERT INTO core.analysis_results (agent_id, result) VALUES ('a1', '{"patterns": [{"kind": "x"}]}')$$,
                 '23514', NULL, 'a pattern without a key is refused');
SELECT throws_ok($$INSERT INTO core.analysis_results (agent_id, result) VALUES ('a1', '{"patterns": [7]}')$$,
                 '23514', NULL, 'a pattern that is neither an object nor a key string is refused');
SELECT throws_ok($$INSERT INTO core.analysis_results (agent_id, result) VALUES ('nobody', '{"patterns": []}')$$,
                 '23503', NULL, 'a result of an unknown agent is refused');
SELECT throws_ok($$INSERT INTO core.analysis_results (agent_id, result, confidence) VALUES ('a1', '{"patterns": []}', 1.5)$$,
                 '23514', NULL, 'confidence outside 0..1 is refused');

-- knowledge: last 24 h only
INSERT INTO core.analysis_results (agent_id, result, confidence, created_at, learned)
VALUES ('a2', '{"patterns": [{"key": "old"}]}', 0.9, now() - interval '2 days', true);
SELECT is(core.update_agent_knowledge(), 2, 'knowledge: one summary per agent with recent results');
SELECT is((SELECT known_patterns->0->>'key' FROM core.agents WHERE id = 'a1'), 'k1', 'knowledge: a1 knows k1 first (2 occurrences)');
SELECT is((SELECT (known_patterns->0->>'occurrences')::int FROM core.agents WHERE id = 'a1'), 2, 'knowledge: a1 saw k1 twice');
SELECT is((SELECT count(*)::int FROM core.agent_knowledge WHERE key = 'old'), 0, 'knowledge: results older than 24 h are ignored');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE message->>'type' = 'knowledge_summary'), 2, 'knowledge: 2 knowledge_summary messages');

-- sync: totals, then nothing until something changes
SELECT is(core.sync_learning_to_centralcloud(), 2, 'sync: 2 patterns sent');
SELECT is((SELECT jsonb_path_query_first(message, '$.artifacts[*] ? (@.key == "k1").occurrences')::int
             FROM outbox.messages WHERE message->>'type' = 'learned_patterns'), 3, 'sync: the total (3), not a delta');
SELECT is(core.sync_learning_to_centralcloud(), 0, 'sync again: nothing changed, nothing sent');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE message->>'type' = 'learned_patterns'), 1, 'sync again: no new message');

SELECT * FROM finish();
ROLLBACK;
