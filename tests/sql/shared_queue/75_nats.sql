-- The NATS bridge's ledger (sql/procedures/shared_queue/75_nats.sql): a bridge is an identity with
-- reply queues only; a request is taken once per (queue, key), its content compared; duplicates,
-- conflicts, refusals and corrected re-sends; results routed back and answered once; phases (2 takes
-- only what the stream stored before the cutover, 3 is refused while answers are pending); only a
-- bridge role may call the ledger. Run as a session of the bridge role (SET SESSION AUTHORIZATION).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(37);

SET LOCAL client_min_messages = warning;
CREATE ROLE svc_nats_t75 LOGIN;
GRANT CONNECT ON DATABASE shared_queue TO svc_nats_t75;
DELETE FROM nats.requests;
UPDATE nats.state SET phase = 1;

SELECT has_schema('nats', 'schema nats holds the ledger');
SELECT has_table('nats', 'requests', 'nats.requests is the ledger');
SELECT has_column('bus', 'instances', 'bridge', 'bus.instances marks bridges');

SET LOCAL ROLE own_shared_queue;
SELECT set_eq($$SELECT nats.ensure_bridge('t75', 'svc_nats_t75')$$,
              ARRAY['approval_responses_t75', 'job_results_t75', 'llm_results_t75', 'question_responses_t75'],
              'a bridge gets reply queues only (no inboxes: broadcasts are for Singularity instances)');
SELECT set_eq($$SELECT nats.ensure_bridge('t75', 'svc_nats_t75')$$,
              ARRAY['approval_responses_t75', 'job_results_t75', 'llm_results_t75', 'question_responses_t75'],
              'ensure_bridge is idempotent');
SELECT throws_ok($$SELECT nats.ensure_bridge('default', 'svc_nats_t75')$$, '23505', NULL,
                 'a Singularity instance cannot be turned into a bridge');
SELECT throws_ok($$SELECT bus.ensure_instance('t75', 'svc_singularity')$$, '23505', NULL,
                 'nor a bridge into a Singularity instance (orchestrator instance add with its id)');
RESET ROLE;
SELECT ok((SELECT bridge FROM bus.instances WHERE instance_id = 't75'), 'the bridge is flagged in bus.instances');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT nats.claim('llm_requests', 'k', 's', 'core', NULL, '{}', NULL)$$,
                 '42501', NULL, 'a service that is no bridge may not call the ledger');

SET LOCAL SESSION AUTHORIZATION svc_nats_t75;
SELECT is(nats.reply_queue('llm_requests'), 'llm_results_t75', 'the bridge''s reply queue for llm_requests');
SELECT throws_ok($$SELECT nats.reply_queue('pattern_messages')$$, '22023', NULL, 'pattern_messages is not bridged');

-- 1. a new request: claimed, sent as the bridge (the trigger checks it like any sender's), recorded
SELECT is(nats.claim('llm_requests', 'r1', 'llm_requests', 'core', '_INBOX.a',
                     '{"id": "r1", "agent_id": "a", "task_type": "t", "messages": ["hi"]}', NULL)->>'status',
          'new', 'a request seen for the first time is new');
SELECT pgmq.send('llm_requests', '{"id": "01J0000000000000000000NATS", "agent_id": "a", "task_type": "t", "messages": ["hi"], "reply_to": "llm_results_t75"}') AS m1 \gset
SELECT lives_ok(format($$SELECT nats.enqueued('llm_requests', 'r1', '01J0000000000000000000NATS', %s)$$, :m1),
                'its msg_id is recorded');
SELECT throws_ok($$SELECT nats.enqueued('llm_requests', 'nope', 'x', 1)$$, 'P0002', NULL,
                 'enqueued without a claim is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', '{"agent_id": "a", "task_type": "t", "messages": ["hi"], "reply_to": "llm_results"}')$$,
                 '42501', NULL, 'the bridge may not name another instance''s reply queue (trust rules apply)');

-- 2. the same request again, other content under the key, a refusal, a corrected re-send
SELECT is(nats.claim('llm_requests', 'r1', 'llm_requests', 'core', '_INBOX.b',
                     '{"id": "r1", "agent_id": "a", "task_type": "t", "messages": ["hi"]}', NULL)->>'status',
          'duplicate', 'the same request again is a duplicate (nothing sent)');
SELECT is(nats.claim('llm_requests', 'r1', 'llm_requests', 'core', NULL,
                     '{"id": "r1", "agent_id": "a", "task_type": "t", "messages": ["other"]}', NULL)->>'status',
          'conflict', 'other content under the same key is a conflict');
SELECT is(nats.claim('approval_requests', 'r1', 'approval_requests', 'core', NULL, '{"id": "r1", "diff": "x"}', NULL)->>'status',
          'new', 'keys are per queue');
SELECT lives_ok($$SELECT nats.reject('llm_requests', 'bad', 'llm_requests', 'core', '_INBOX.c', '{"id": "bad"}',
                                     'llm_requests: "agent_id" is required', '{"id": "bad"}')$$, 'a refusal is recorded');
SELECT is(nats.claim('llm_requests', 'bad', 'llm_requests', 'core', NULL, '{"id": "bad"}', NULL)->>'status',
          'rejected', 'the refused request sent again as it was is refused again');
SELECT is(nats.claim('llm_requests', 'bad', 'llm_requests', 'core', NULL,
                     '{"id": "bad", "agent_id": "a", "task_type": "t", "messages": ["fixed"]}', NULL)->>'status',
          'new', 'corrected, it is taken');
SELECT lives_ok($$SELECT nats.reject('job_requests', 'junk', 'job_requests', 'core', NULL, '{not json', 'not JSON', NULL)$$,
                'an undecodable payload is recorded too');
RESET SESSION AUTHORIZATION;
SELECT results_eq($$SELECT reply_subject, duplicates FROM nats.requests WHERE queue = 'llm_requests' AND request_key = 'r1'$$,
                  $$VALUES ('_INBOX.b'::text, 1)$$, 'the duplicate counted; the newest asker gets the answer');
SELECT results_eq($$SELECT status, payload FROM nats.requests WHERE request_key = 'junk'$$,
                  $$VALUES ('rejected'::text, '{not json'::text)$$, 'nothing is dropped silently: the payload is kept');

-- 3. results back: reply_for finds the asker; answered once
SET LOCAL SESSION AUTHORIZATION svc_nats_t75;
SELECT results_eq($$SELECT request_key, reply_subject FROM nats.reply_for('llm_results_t75', '01J0000000000000000000NATS')$$,
                  $$VALUES ('r1'::text, '_INBOX.b'::text)$$, 'a result on the reply queue finds its NATS asker');
SELECT is_empty($$SELECT * FROM nats.reply_for('job_results_t75', '01J0000000000000000000NATS')$$,
                'a result of another kind does not');
SELECT is(nats.answered('llm_requests', 'r1', 'llm_results_t75', 1), 'answered', 'answered once');
SELECT is(nats.answered('llm_requests', 'r1', 'llm_results_t75', 2), 'already', 'a second result changes nothing');
SELECT is(nats.claim('llm_requests', 'r1', 'llm_requests', 'core', NULL,
                     '{"id": "r1", "agent_id": "a", "task_type": "t", "messages": ["hi"]}', NULL)->>'status',
          'answered', 'the request sent after its answer is not taken again');
RESET SESSION AUTHORIZATION;

-- 4. phases
SELECT throws_ok($$SELECT nats.set_phase(3)$$, '55000', NULL, 'phase 3 is refused while bridged requests wait');
SELECT is(nats.set_phase(2, 'cutover'), 2, 'phase 2');
UPDATE nats.state SET changed_at = now() - interval '1 minute';
SET LOCAL SESSION AUTHORIZATION svc_nats_t75;
SELECT is(nats.claim('llm_requests', 'p2a', 'llm_requests', 'core', NULL, '{"id": "p2a"}', NULL)->>'status',
          'closed', 'phase 2 takes no new core NATS request');
SELECT is(nats.claim('llm_requests', 'p2b', 'llm_requests', 'jetstream', NULL, '{"id": "p2b"}', now() - interval '2 minutes')->>'status',
          'new', 'phase 2 drains what the stream stored before the cutover');
SELECT is(nats.claim('llm_requests', 'p2c', 'llm_requests', 'jetstream', NULL, '{"id": "p2c"}', now())->>'status',
          'closed', 'but not what it stored after');
RESET SESSION AUTHORIZATION;
DELETE FROM nats.requests WHERE status = 'enqueued';
SELECT is(nats.set_phase(3), 3, 'phase 3 once nothing is pending');
SELECT results_eq($$SELECT requests, rejected, duplicates FROM nats.traffic(1) WHERE subject = 'llm_requests' AND via = 'core'$$,
                  $$VALUES (1::bigint, 0::bigint, 2::bigint)$$, 'traffic per subject: requests, refusals, duplicates (r1 sent three times)');
SELECT is((nats.status(1)->>'pending')::int, 0, 'status: nothing pending');

SELECT * FROM finish();
ROLLBACK;
