-- CentralCloud SQL on fixtures (no dblink: batches are put straight into the staging tables):
-- pattern folding (deltas summed, totals replace, late deltas ignored, presence, rejects, ledger
-- idempotence), aggregation and ranking, heartbeat registry and states, package catalogue, the
-- aggregated_patterns messages, bad input, and what svc_centralcloud may not do.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(47);

TRUNCATE centralcloud.received, centralcloud.instance_patterns, centralcloud.patterns, centralcloud.packages,
         centralcloud.instances, centralcloud._batch_patterns, centralcloud._batch_heartbeats;

-- batch 1: deltas from instances A and B, plus one message with two malformed pattern objects
INSERT INTO centralcloud._batch_patterns VALUES
  ('pattern_messages', 1, 1, '2030-01-01 00:00:01+00', '{"type": "pattern_detection", "instance_id": "A", "patterns": [
     {"key": "k1", "kind": "syntax", "occurrences": 3, "confidence": 0.8, "packages": ["p1"], "first_seen": "2029-12-31T10:00:00Z"},
     {"key": "k2", "kind": "practice", "occurrences": 1, "confidence": 0.5}]}'),
  ('pattern_messages', 2, 1, '2030-01-01 00:00:02+00', '{"type": "pattern_detection", "instance_id": "B", "patterns": [
     {"key": "k1", "kind": "syntax", "occurrences": 2, "confidence": 0.6, "packages": ["p2"], "last_seen": "2030-01-01T00:00:00Z"}]}'),
  ('pattern_messages', 3, 1, '2030-01-01 00:00:03+00', '{"type": "pattern_detection", "instance_id": "A", "patterns": [
     {"nokey": 1}, {"key": "k3", "occurrences": "many"}]}');
SELECT is(centralcloud._fold_patterns(), '{"messages": 3, "new": 3, "duplicates": 0, "items": 5, "rejected": 2, "conflicts": 0}'::jsonb,
          'first fold: 3 new messages, 5 pattern objects, 2 rejected');
SELECT is((SELECT rejected FROM centralcloud.received WHERE queue_name = 'pattern_messages' AND msg_id = 3), 2,
          'the ledger keeps how many objects of a message were rejected');
SELECT set_eq($$SELECT instance_id, key, occurrences FROM centralcloud.instance_patterns$$,
              $$VALUES ('A', 'k1', 3::bigint), ('A', 'k2', 1::bigint), ('B', 'k1', 2::bigint)$$,
              'deltas folded per instance and key; rejected objects left out');
SELECT is(centralcloud._fold_patterns()->>'duplicates', '3', 'the same batch again: all 3 dropped as duplicates');
SELECT is((SELECT sum(occurrences) FROM centralcloud.instance_patterns), 6::numeric, 'a re-delivered batch changes no count');

SELECT is(centralcloud.rank_patterns(), 2, 'ranking creates 2 aggregated patterns');
SELECT row_eq($$SELECT key, kind, instances, total_occurrences, confidence, rank, packages FROM centralcloud.patterns WHERE key = 'k1'$$,
              ROW('k1'::text, 'syntax'::text, 2, 5::bigint, 0.7200, 1, ARRAY['p1', 'p2'])::record,
              'k1: 2 instances, 5 occurrences, occurrence-weighted confidence, rank 1, packages merged');
SELECT row_eq($$SELECT instances, total_occurrences, rank FROM centralcloud.patterns WHERE key = 'k2'$$,
              ROW(1, 1::bigint, 2)::record, 'k2: 1 instance, rank 2');
SELECT is((SELECT first_seen FROM centralcloud.patterns WHERE key = 'k1'), '2029-12-31 10:00:00+00'::timestamptz,
          'first_seen from the pattern objects');
SELECT centralcloud.patterns_digest() AS d1 \gset
SELECT is(centralcloud.rank_patterns(), 0, 'ranking again changes nothing');
SELECT is(centralcloud.patterns_digest(), :'d1', 'the digest is stable: ranking again gives the same digest');
UPDATE centralcloud.patterns SET key = key WHERE rank = 1;  -- rank 1 now lies after rank 2 on disk
SELECT is(centralcloud.patterns_digest(), :'d1', 'the digest follows the ranking, not where the rows lie on disk');
SELECT isnt(:'d1', md5(''), 'the digest covers the patterns (not the digest of nothing)');

-- batch 2: A's total for k1 replaces its count
TRUNCATE centralcloud._batch_patterns;
INSERT INTO centralcloud._batch_patterns VALUES
  ('learned_patterns', 1, 1, '2030-01-01 00:00:05+00', '{"type": "learned_patterns", "instance_id": "A", "artifacts": [
     {"key": "k1", "kind": "syntax", "occurrences": 10, "confidence": 0.9}]}');
SELECT is(centralcloud._fold_patterns()->>'new', '1', 'a learned_patterns total is folded');
SELECT is((SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'A' AND key = 'k1'), 10::bigint,
          'the total replaces A''s count for k1');
SELECT is(centralcloud._fold_patterns()->>'duplicates', '1', 'the same total re-delivered is dropped');

-- batch 3: a delta after the total adds; a delta enqueued before it (arriving late) is covered by it
TRUNCATE centralcloud._batch_patterns;
INSERT INTO centralcloud._batch_patterns VALUES
  ('pattern_messages', 4, 1, '2030-01-01 00:00:06+00', '{"type": "pattern_detection", "instance_id": "A", "patterns": [{"key": "k1", "occurrences": 2}]}'),
  ('pattern_messages', 5, 1, '2030-01-01 00:00:04+00', '{"type": "pattern_detection", "instance_id": "A", "patterns": [{"key": "k1", "occurrences": 100}]}'),
  ('learned_patterns', 2, 1, '2030-01-01 00:00:07+00', '{"type": "knowledge_summary", "instance_id": "C", "agent_id": "ag1", "patterns": [
     {"key": "k2", "kind": "practice", "confidence": 0.7, "packages": ["p3"]}]}');
SELECT centralcloud._fold_patterns();
SELECT is((SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'A' AND key = 'k1'), 12::bigint,
          'a delta after the total adds to it; one from before the total is ignored');
SELECT is((SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'C' AND key = 'k2'), 0::bigint,
          'a knowledge_summary records presence (instance, kind, packages) without adding occurrences');
SELECT centralcloud.rank_patterns();
SELECT row_eq($$SELECT instances, total_occurrences FROM centralcloud.patterns WHERE key = 'k1'$$, ROW(2, 14::bigint)::record,
              'k1 aggregated: A 12 + B 2');
SELECT isnt(centralcloud.patterns_digest(), :'d1', 'the digest changes when the ranking changes');

-- package catalogue
SELECT ok(centralcloud.refresh_packages() > 0, 'package catalogue built');
SELECT set_eq($$SELECT package, patterns, instances FROM centralcloud.packages$$,
              $$VALUES ('p1', 1, 1), ('p2', 1, 1), ('p3', 1, 1)$$, 'packages with the patterns and instances using them');
SELECT is(centralcloud.refresh_packages(), 0, 'refreshing the catalogue again changes nothing');

-- aggregated_patterns messages (docs/shapes.md)
SELECT is((SELECT count(*) FROM centralcloud.aggregated_messages()), 1::bigint, 'one aggregated_patterns message');
SELECT is((SELECT m->>'type' FROM centralcloud.aggregated_messages() m), 'aggregated_patterns', 'message type');
SELECT is((SELECT jsonb_array_length(m->'patterns') FROM centralcloud.aggregated_messages() m), 2, 'every pattern in it');
SELECT is((SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(m->'patterns'->0) k) FROM centralcloud.aggregated_messages() m),
          ARRAY['confidence', 'instances', 'key', 'kind', 'packages', 'rank', 'total_occurrences'], 'pattern fields as in docs/shapes.md');
SELECT centralcloud.set_setting('sync_chunk', '1');
SELECT is((SELECT count(*) FROM centralcloud.aggregated_messages()), 2::bigint, 'chunked by sync_chunk');

-- heartbeat registry
SELECT is(centralcloud.heartbeat_status(now() - interval '10 seconds'), 'healthy', 'seen 10 s ago: healthy');
SELECT is(centralcloud.heartbeat_status(now() - interval '4 minutes'), 'late', 'seen 4 min ago: late (the default late_after is 180 s)');
SELECT is(centralcloud.heartbeat_status(now() - interval '1 hour'), 'gone', 'seen 1 h ago: gone');
INSERT INTO centralcloud._batch_heartbeats VALUES
  ('instance_heartbeat', 1, 1, now() - interval '5 minutes', '{"type": "heartbeat", "instance_id": "A", "service": "singularity", "at": "x", "stats": {"n": 1}}'),
  ('instance_heartbeat', 2, 1, now() - interval '10 seconds', '{"type": "heartbeat", "instance_id": "A", "service": "singularity", "at": "x", "stats": {"n": 2}}'),
  ('instance_heartbeat', 3, 1, now() - interval '1 hour', '{"type": "heartbeat", "instance_id": "B", "service": "nexus", "at": "x"}');
SELECT is(centralcloud._fold_heartbeats(), 2, 'two registry rows from three heartbeats');
SELECT set_eq($$SELECT instance_id, service, status, stats FROM centralcloud.instance_status$$,
              $$VALUES ('A', 'singularity', 'healthy', '{"n": 2}'::jsonb), ('B', 'nexus', 'gone', NULL::jsonb)$$,
              'registry: latest stats, status by last seen');
SELECT is(centralcloud._fold_heartbeats(), 0, 'the same heartbeats again change nothing');

SELECT is(centralcloud._ts('2030-02-29T00:00:00Z'), NULL, 'an impossible date is NULL, not an error');
SELECT is(centralcloud._ts('2028-02-29T12:00:00+02:00'), '2028-02-29 10:00:00+00'::timestamptz, 'a leap day is fine');
SELECT is(centralcloud._ts('yesterday'), NULL, 'free text is NULL');
SELECT is(centralcloud._ts('2030-01-31'), '2030-01-31 00:00:00+00'::timestamptz, 'a date alone is midnight (session time zone UTC)');

-- housekeeping
INSERT INTO centralcloud.received (queue_name, msg_id, received_at) VALUES ('pattern_messages', -1, now() - interval '8 days');
INSERT INTO centralcloud.job_runs (job, started_at, finished_at, ok, result) VALUES ('x', now() - interval '31 days', now() - interval '31 days', true, 'old');
SELECT is(centralcloud.prune(), 2::bigint, 'prune drops ledger entries older than 7 days and job runs older than 30');
SELECT ok(EXISTS (SELECT 1 FROM centralcloud.received WHERE msg_id = 1), 'recent ledger entries stay');

-- bad input and what svc_centralcloud may not do
SELECT throws_ok($$SELECT centralcloud._read_batch('pattern_messages', 10, 'settings')$$, '22023', NULL,
                 'staging tables only');
SELECT throws_ok($$SELECT centralcloud.record_templates('x', '', '[]')$$, '22023', NULL, 'a distribution needs a commit');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; SELECT centralcloud.set_setting('batch_size', '1'); RESET ROLE$$, '42501', NULL,
                 'svc_centralcloud may not change settings');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; UPDATE centralcloud.settings SET value = '1'; RESET ROLE$$, '42501', NULL,
                 'svc_centralcloud may not write the settings table');

-- A re-sent copy (same envelope id, new msg_id: an outbox drain that crashed before its local delete)
-- is dropped; a delta written before a total (by created_at) is already in that total.
TRUNCATE centralcloud._batch_patterns;
INSERT INTO centralcloud._batch_patterns VALUES
  ('pattern_messages', 901, 1, '2030-02-01 00:00:01+00', '{"id": "01JENVELOPE0000000000000001", "type": "pattern_detection",
     "instance_id": "E", "patterns": [{"key": "kd", "occurrences": 4}]}'),
  ('pattern_messages', 902, 1, '2030-02-01 00:00:02+00', '{"id": "01JENVELOPE0000000000000001", "type": "pattern_detection",
     "instance_id": "E", "patterns": [{"key": "kd", "occurrences": 4}]}');
SELECT is(centralcloud._fold_patterns()->>'duplicates', '1', 'a re-sent copy with the same envelope id is a duplicate');
SELECT is((SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'E' AND key = 'kd'), 4::bigint,
          'the re-sent copy is counted once');
TRUNCATE centralcloud._batch_patterns;
INSERT INTO centralcloud._batch_patterns VALUES
  ('learned_patterns', 903, 1, '2030-02-01 00:00:03+00', '{"type": "learned_patterns", "instance_id": "F",
     "created_at": "2030-02-01T00:00:00.002Z", "artifacts": [{"key": "kt", "occurrences": 5}]}'),
  ('pattern_messages', 904, 1, '2030-02-01 00:00:04+00', '{"type": "pattern_detection", "instance_id": "F",
     "created_at": "2030-02-01T00:00:00.001Z", "patterns": [{"key": "kt", "occurrences": 2}]}');
SELECT centralcloud._fold_patterns();
SELECT is((SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'F' AND key = 'kt'), 5::bigint,
          'a delta written before the total (enqueued after it) is not added to it');

SELECT * FROM finish();
ROLLBACK;
