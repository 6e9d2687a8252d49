-- Consuming job_requests as the real roles (svc_singularity sends, svc_genesis consumes):
-- fenced ack (acked / stale / gone), batch ack, set_lease, fail -> retry with backoff -> dead letter,
-- and the operator's dlq_replay (revalidated) and dlq_purge.
-- An expired visibility timeout is simulated by moving vt into the past (as the superuser).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(68);
SET LOCAL client_min_messages = warning;

-- Start from empty live queues (rolled back at the end).
DELETE FROM pgmq.q_job_requests;
DELETE FROM pgmq.q_dead_letters;
CREATE FUNCTION pg_temp.expire(id bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE pgmq.q_job_requests SET vt = clock_timestamp() - interval '1 second' WHERE msg_id = id $$;

SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('job_requests', '{"code": "print(1)", "language": "python", "mode": "run", "agent_id": "m1"}') AS m1 \gset
RESET ROLE;

-- 1. Fenced ack: a late ack from an expired delivery is 'stale' and archives nothing.
SET LOCAL ROLE svc_genesis;
SELECT msg_id AS d1_id, read_ct AS d1_ct FROM pgmq.read('job_requests', 30, 1) \gset
RESET ROLE;
SELECT is(:d1_id::bigint, :m1::bigint, 'the consumer got the message');
SELECT is(:d1_ct, 1, 'first delivery has read_ct 1');
SELECT pg_temp.expire(:m1);
SET LOCAL ROLE svc_genesis;
SELECT read_ct AS d2_ct FROM pgmq.read('job_requests', 30, 1) \gset
SELECT bus.ack('job_requests', :m1, :d1_ct) AS late_ack \gset
RESET ROLE;
SELECT is(:d2_ct, 2, 'after the visibility timeout ran out the message is delivered again (read_ct 2)');
SELECT is(:'late_ack'::text, 'stale', 'the first delivery''s late ack is refused as stale');
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_job_requests WHERE msg_id = :m1), 'the stale ack left the message in the queue');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgmq.a_job_requests WHERE msg_id = :m1), 'the stale ack archived nothing');
SET LOCAL ROLE svc_genesis;
SELECT bus.ack('job_requests', :m1, :d2_ct) AS ack2 \gset
SELECT bus.ack('job_requests', :m1, :d2_ct) AS ack3 \gset
SELECT bus.ack('job_requests', -1, 1) AS ack_none \gset
RESET ROLE;
SELECT is(:'ack2'::text, 'acked', 'the current delivery''s ack is accepted');
SELECT is((SELECT read_ct FROM pgmq.a_job_requests WHERE msg_id = :m1), 2, 'the message is archived with read_ct 2');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgmq.q_job_requests WHERE msg_id = :m1), 'and is no longer in the queue');
SELECT is(:'ack3'::text, 'gone', 'acking it again says gone');
SELECT is(:'ack_none'::text, 'gone', 'acking an id that never existed says gone');

-- 2. Batch ack: only the pairs whose read_ct still matches are archived.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('job_requests', '{"code": "a", "language": "python", "mode": "run"}') AS b1 \gset
SELECT pgmq.send('job_requests', '{"code": "b", "language": "python", "mode": "lint"}') AS b2 \gset
SELECT pgmq.send('job_requests', '{"code": "c", "language": "python", "mode": "validate"}') AS b3 \gset
RESET ROLE;
SET LOCAL ROLE svc_genesis;
SELECT count(*) AS nread FROM pgmq.read('job_requests', 30, 10) \gset
RESET ROLE;
SELECT is(:nread::int, 3, 'a batch read returns the 3 messages');
SET LOCAL ROLE svc_genesis;
SELECT array_agg(a ORDER BY a)::text AS batch_acked
  FROM bus.ack('job_requests', ARRAY[:b1, :b2, :b3]::bigint[], ARRAY[1, 1, 7]) AS a \gset
RESET ROLE;
SELECT is(:'batch_acked'::bigint[], ARRAY[:b1, :b2]::bigint[],
          'batch ack archives the two matching deliveries and skips the stale one');
SELECT is(current_user::text, 'postgres', 'role reset after the batch ack');
SELECT is((SELECT count(*)::int FROM pgmq.a_job_requests WHERE msg_id IN (:b1, :b2)), 2, 'both are in the archive');
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_job_requests WHERE msg_id = :b3), 'the stale pair stays in the queue');
SELECT results_eq(format('SELECT bus.ack(%L, ARRAY[%s]::bigint[], ARRAY[1])', 'job_requests', :b1),
                  'SELECT NULL::bigint WHERE false', 'batch-acking an already archived id archives nothing');

-- 3. set_lease: extend a held message, refuse a stale holder, release with 0.
SET LOCAL ROLE svc_genesis;
SELECT bus.set_lease('job_requests', :b3, 1, 120) AS lease_ok \gset
RESET ROLE;
SELECT is(:'lease_ok'::text, 'ok', 'set_lease by the current holder says ok');
SELECT ok((SELECT vt FROM pgmq.q_job_requests WHERE msg_id = :b3) BETWEEN clock_timestamp() + interval '110 seconds'
                                                                     AND clock_timestamp() + interval '121 seconds',
          'the lease now ends about 120 s from now');
SELECT is(bus.set_lease('job_requests', :b3, 2, 120), 'stale', 'set_lease with another delivery''s read_ct says stale');
SELECT is(bus.set_lease('job_requests', -1, 1, 120), 'gone', 'set_lease of a missing message says gone');
SELECT throws_ok(format('SELECT bus.set_lease(%L, %s, 1, -1)', 'job_requests', :b3), '22023',
                 'lease seconds must be >= 0, got -1', 'a negative lease is refused (22023)');
SET LOCAL ROLE svc_genesis;
SELECT bus.set_lease('job_requests', :b3, 1, 0) AS released \gset
SELECT msg_id AS again_id, read_ct AS again_ct FROM pgmq.read('job_requests', 30, 1) \gset
RESET ROLE;
SELECT is(:'released'::text, 'ok', 'set_lease 0 releases the message');
SELECT is(:again_id::bigint, :b3::bigint, 'a released message is delivered again at once');
SELECT is(:again_ct, 2, 'with read_ct 2');

-- 4. fail: retry with backoff and the error in headers, then dead letter after max attempts.
SET LOCAL ROLE svc_genesis;
SELECT bus.fail('job_requests', :b3, 2, 'sandbox crashed', 3, 10) AS fail1 \gset
RESET ROLE;
SELECT is(:'fail1'::text, 'retry', 'a failure below max_attempts is retried');
SELECT ok((SELECT vt FROM pgmq.q_job_requests WHERE msg_id = :b3) > clock_timestamp() + interval '14 seconds',
          'the retry is delayed by the exponential backoff (10 s x 2^(2-1) x >= 0.75)');
SELECT ok((SELECT vt FROM pgmq.q_job_requests WHERE msg_id = :b3) < clock_timestamp() + interval '26 seconds',
          'and not by more than the backoff with jitter (x 1.25)');
SELECT is((SELECT headers->>'last_error' FROM pgmq.q_job_requests WHERE msg_id = :b3), 'sandbox crashed',
          'headers.last_error records the error');
SELECT is((SELECT (headers->>'attempts')::int FROM pgmq.q_job_requests WHERE msg_id = :b3), 2,
          'headers.attempts records the attempt count');
SET LOCAL ROLE svc_genesis;
SELECT count(*) AS visible_now FROM pgmq.read('job_requests', 30, 10) \gset
RESET ROLE;
SELECT is(:visible_now::int, 0, 'during the backoff the message is not delivered');
SELECT is(bus.fail('job_requests', :b3, 1, 'late', 3, 10), 'stale', 'fail with a stale read_ct says stale');
SELECT pg_temp.expire(:b3);
SET LOCAL ROLE svc_genesis;
SELECT read_ct AS ct3 FROM pgmq.read('job_requests', 30, 1) \gset
SELECT bus.fail('job_requests', :b3, :ct3, 'sandbox crashed again', NULL, 10) AS fail3 \gset
RESET ROLE;
SELECT is(:ct3, 3, 'third delivery has read_ct 3');
SELECT is(:'fail3'::text, 'dead_lettered', 'the third failure of a job (kind max_attempts 3) dead-letters it');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgmq.q_job_requests WHERE msg_id = :b3), 'the message left job_requests');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgmq.a_job_requests WHERE msg_id = :b3), 'and was not archived as done');
SELECT is((SELECT count(*)::int FROM pgmq.q_dead_letters WHERE message->>'queue' = 'job_requests' AND (message->>'msg_id')::bigint = :b3),
          1, 'exactly one dead letter names job_requests and the msg_id');
SELECT is((SELECT message->>'error' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :b3),
          'failed 3 times (max_attempts 3); last error: sandbox crashed again', 'the dead letter carries the error');
SELECT is((SELECT (message->>'attempts')::int FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :b3), 3,
          'the dead letter carries the attempt count');
SELECT is((SELECT message->'message'->>'code' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :b3), 'c',
          'the dead letter carries the original message');
SELECT is((SELECT message->>'dead_lettered_by' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :b3), 'svc_genesis',
          'the dead letter is stamped with the consumer that gave up on it');
SELECT ok(ops.is_ulid((SELECT message->>'id' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :b3)),
          'the dead letter is a validated bus message (ULID id stamped)');

-- 5. dead_letter at once (poison message), fenced.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('job_requests', '{"code": "rm -rf /", "language": "sh", "mode": "run"}') AS p1 \gset
RESET ROLE;
SET LOCAL ROLE svc_genesis;
SELECT read_ct AS p1_ct FROM pgmq.read('job_requests', 30, 1) \gset
SELECT bus.dead_letter('job_requests', :p1, :p1_ct + 5, 'poison') AS dl_stale \gset
SELECT bus.dead_letter('job_requests', :p1, :p1_ct, 'poison') AS dl_ok \gset
RESET ROLE;
SELECT is(:'dl_stale'::text, 'stale', 'dead_letter with a stale read_ct says stale and moves nothing');
SELECT is(:'dl_ok'::text, 'dead_lettered', 'dead_letter by the holder moves it at once');
SELECT is((SELECT message->>'error' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :p1), 'poison',
          'with the given reason');
SELECT is((SELECT (message->>'attempts')::int FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :p1), 1,
          'and attempts 1');

-- 6. dlq_replay (operator): the message goes back to its queue, validated again; the dead letter is archived.
SELECT msg_id AS dl_b3 FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :b3 \gset
SET LOCAL ROLE own_shared_queue;
SELECT bus.dlq_replay(:dl_b3) AS replayed \gset
RESET ROLE;
SELECT is((SELECT message->>'code' FROM pgmq.q_job_requests WHERE msg_id = :replayed), 'c',
          'dlq_replay puts the original message back on job_requests');
SELECT is((SELECT read_ct FROM pgmq.q_job_requests WHERE msg_id = :replayed), 0, 'as a fresh delivery (read_ct 0)');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgmq.q_dead_letters WHERE msg_id = :dl_b3)
          AND EXISTS (SELECT 1 FROM pgmq.a_dead_letters WHERE msg_id = :dl_b3),
          'the replayed dead letter moved to the dead_letters archive');
-- A dead letter whose message is invalid now (the rules changed since it was sent) is not replayed,
-- and stays in the DLQ.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('job_requests', '{"code": "x", "language": "python", "mode": "run"}') AS bad1 \gset
RESET ROLE;
UPDATE pgmq.q_job_requests SET vt = clock_timestamp() - interval '1 second' WHERE msg_id <> :bad1;
SET LOCAL ROLE svc_genesis;
SELECT read_ct AS bad1_ct FROM pgmq.read('job_requests', 30, 1, '{"code": "x"}') \gset
SELECT bus.dead_letter('job_requests', :bad1, :bad1_ct, 'malformed') AS bad1_dl \gset
RESET ROLE;
SELECT msg_id AS dl_bad FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :bad1 \gset
UPDATE bus.message_fields SET required = true WHERE kind = 'job_requests' AND field = 'timeout_s';
SELECT throws_ok(format('SET LOCAL ROLE own_shared_queue; SELECT bus.dlq_replay(%s); RESET ROLE', :dl_bad), '22023',
                 'job_requests: required field "timeout_s" is missing', 'dlq_replay validates again: a malformed message is refused');
UPDATE bus.message_fields SET required = false WHERE kind = 'job_requests' AND field = 'timeout_s';
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_dead_letters WHERE msg_id = :dl_bad), 'the refused dead letter stays in the DLQ');
-- A real dead letter of a queue that was dropped since.
SET LOCAL ROLE own_shared_queue;
SELECT bus.ensure_queue('gone_queue', 'job_requests');
RESET ROLE;
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('gone_queue', '{"code": "y", "language": "python", "mode": "run"}') AS gone1 \gset
RESET ROLE;
SET LOCAL ROLE svc_genesis;
SELECT read_ct AS gone1_ct FROM pgmq.read('gone_queue', 30, 1) \gset
SELECT bus.dead_letter('gone_queue', :gone1, :gone1_ct, 'x') AS gone1_dl \gset
RESET ROLE;
SELECT msg_id AS dl_noq FROM pgmq.q_dead_letters WHERE message->>'queue' = 'gone_queue' \gset
SET LOCAL ROLE own_shared_queue;
SELECT bus.drop_queue('gone_queue');
RESET ROLE;
SELECT throws_ok(format('SELECT bus.dlq_replay(%s)', :dl_noq), '42P01', 'unknown queue "gone_queue"',
                 'dlq_replay to a queue that no longer exists is 42P01');
SELECT throws_ok('SELECT bus.dlq_replay(-1)', 'P0002', 'dead letter -1 does not exist', 'dlq_replay of a missing id is P0002');

-- 7. dlq_purge: by queue, then all; purged dead letters stay in the archive.
SELECT is((SELECT count(*)::int FROM pgmq.q_dead_letters), 3, 'three dead letters are left (poison, malformed, gone_queue)');
SET LOCAL ROLE own_shared_queue;
SELECT bus.dlq_purge('gone_queue') AS purged_one \gset
RESET ROLE;
SELECT is(:purged_one::int, 1, 'dlq_purge(queue) purges that queue''s dead letters only');
SELECT is((SELECT count(*)::int FROM pgmq.q_dead_letters WHERE message->>'queue' = 'job_requests'), 2,
          'the other queue''s dead letters are kept');
SET LOCAL ROLE own_shared_queue;
SELECT bus.dlq_purge() AS purged_all \gset
RESET ROLE;
SELECT is(:purged_all::int, 2, 'dlq_purge() purges the rest');
SELECT is((SELECT count(*)::int FROM pgmq.a_dead_letters WHERE msg_id IN (:dl_bad, :dl_noq)), 2,
          'purged dead letters are in the archive until retention');

-- bus.take: a requester takes its reply (read + archive in one statement), as svc_singularity.
DELETE FROM pgmq.q_llm_results;
SET LOCAL ROLE svc_nexus;
SELECT pgmq.send('llm_results', '{"request_id": "req-a", "result": "A"}') AS ra \gset
SELECT pgmq.send('llm_results', '{"request_id": "req-b", "result": "B"}') AS rb \gset
SELECT pgmq.send('llm_results', '{"request_id": "req-c", "result": "C"}', 60) AS rc \gset
RESET ROLE;
SET LOCAL ROLE svc_singularity;
SELECT msg_id AS took_id, message->>'result' AS took_result, read_ct AS took_ct
  FROM bus.take('llm_results', '{"request_id": "req-b"}') \gset
SELECT count(*) AS again FROM bus.take('llm_results', '{"request_id": "req-b"}') \gset
SELECT count(*) AS delayed FROM bus.take('llm_results', '{"request_id": "req-c"}') \gset
RESET ROLE;
SELECT is(:took_id::bigint, :rb::bigint, 'bus.take returns the message whose body matches, not the first one');
SELECT is(:'took_result'::text, 'B', 'with its body');
SELECT is(:took_ct, 1, 'counted as one delivery (read_ct 1)');
SELECT is((SELECT count(*)::int FROM pgmq.a_llm_results WHERE msg_id = :rb AND last_read_at IS NOT NULL), 1,
          'the taken reply is archived in the same statement');
SELECT is(:again::int, 0, 'a reply is taken once: a second take finds nothing');
SELECT is(:delayed::int, 0, 'a message not yet visible (delayed or leased) is not taken');
SELECT is((SELECT count(*)::int FROM pgmq.q_llm_results WHERE msg_id IN (:ra, :rc)), 2,
          'the other replies stay in the queue');
SELECT throws_ok($$SELECT * FROM bus.take('llm_results', '{}')$$, '22023',
                 'bus.take(llm_results): match must be a non-empty JSON object, got {}',
                 'an empty match (it would take any message) is refused');
SELECT throws_ok($$SELECT * FROM bus.take('no_such_queue', '{"request_id": "x"}')$$, '42P01', NULL,
                 'taking from an unknown queue names the known ones (42P01)');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT * FROM bus.take('llm_results', '{"request_id": "req-a"}')$$,
                 '42501', NULL, 'svc_genesis may not take replies meant for Singularity (llm_results)');

SELECT * FROM finish();
ROLLBACK;
