-- The envelope-id ledger is scoped to the sending instance and keeps each message's hash (DESIGN.md
-- 8b): another instance's message with the same id is folded, not dropped as a copy; the same
-- instance reusing an id for other content is refused and counted, never folded.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);
TRUNCATE centralcloud.received, centralcloud.instance_patterns, centralcloud._batch_patterns;

INSERT INTO centralcloud._batch_patterns VALUES
  ('pattern_messages', 1, 1, '2030-01-01 00:00:01+00', '{"id": "M1", "type": "pattern_detection", "instance_id": "A", "patterns": [{"key": "k1", "occurrences": 3}]}'),
  ('pattern_messages', 2, 1, '2030-01-01 00:00:02+00', '{"id": "M1", "type": "pattern_detection", "instance_id": "B", "patterns": [{"key": "k1", "occurrences": 2}]}');
SELECT is(centralcloud._fold_patterns()->>'new', '2', 'the same envelope id from two instances: both folded');
SELECT set_eq($$SELECT instance_id, occurrences FROM centralcloud.instance_patterns$$, $$VALUES ('A', 3::bigint), ('B', 2::bigint)$$,
              'each instance''s count is in');
TRUNCATE centralcloud._batch_patterns;
INSERT INTO centralcloud._batch_patterns VALUES
  ('pattern_messages', 3, 1, '2030-01-01 00:00:03+00', '{"id": "M1", "type": "pattern_detection", "instance_id": "A", "patterns": [{"key": "k1", "occurrences": 3}], "created_at": "2030-01-01T00:00:03Z"}'),
  ('pattern_messages', 4, 1, '2030-01-01 00:00:04+00', '{"id": "M1", "type": "pattern_detection", "instance_id": "A", "patterns": [{"key": "k1", "occurrences": 900}]}');
SELECT is(centralcloud._fold_patterns() - 'items'::text - 'rejected'::text,
          '{"messages": 2, "new": 0, "duplicates": 1, "conflicts": 1}'::jsonb,
          'a re-sent copy is a duplicate; the same id with other content is a conflict');
SELECT is((SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'A'), 3::bigint,
          'the conflicting message was not folded');
SELECT ok((SELECT conflict AND rejected = 1 FROM centralcloud.received WHERE msg_id = 4),
          'it is recorded in the ledger as a refused conflict, not dropped silently');
SELECT ok((SELECT NOT conflict FROM centralcloud.received WHERE msg_id = 1), 'the first message stays the id''s owner');
SELECT is(centralcloud._fold_patterns()->>'new', '0', 'the conflicting message redelivered is not folded either');

SELECT * FROM finish();
ROLLBACK;
