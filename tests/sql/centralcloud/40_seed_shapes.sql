-- learned_patterns as the seeds send them: artifacts as strings, usage_count / success_rate on the
-- message (500 uses are 500 occurrences, not 1 with confidence 0).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(3);
TRUNCATE centralcloud.received, centralcloud.instance_patterns, centralcloud._batch_patterns;
INSERT INTO centralcloud._batch_patterns VALUES
  ('learned_patterns', 1, 1, '2030-01-01 00:00:01+00', '{"id": "L1", "type": "learned_patterns", "instance_id": "A",
     "artifacts": ["elixir.genserver", {"key": "elixir.pipe", "occurrences": 3}], "usage_count": 500, "success_rate": 0.95}'),
  ('pattern_messages', 2, 1, '2030-01-01 00:00:02+00', '{"id": "P1", "type": "pattern_detection", "instance_id": "B",
     "patterns": ["rust.borrow"]}');
SELECT is((centralcloud._fold_patterns())->>'rejected', '0', 'string patterns are patterns, not rejects');
SELECT set_eq($$SELECT instance_id, key, occurrences, confidence FROM centralcloud.instance_patterns$$,
              $$VALUES ('A', 'elixir.genserver', 500::bigint, 0.95::numeric), ('A', 'elixir.pipe', 3::bigint, 0.95::numeric),
                       ('B', 'rust.borrow', 1::bigint, NULL::numeric)$$,
              'usage_count and success_rate count for artifacts without their own; an artifact''s own count wins');
SELECT is((SELECT items FROM centralcloud.received WHERE msg_id = 1), 2, 'the ledger counts both artifacts');
SELECT * FROM finish();
ROLLBACK;
