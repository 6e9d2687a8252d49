-- Answering a batch in one transaction (bus.reply, as svc_nexus answers llm_requests): each current
-- delivery is acked and its result sent; a stale or gone delivery sends nothing; bad arguments are refused.
-- Wake-ups: bus._set_wake switches a queue between the statement trigger (throttle 0) and pgmq's
-- throttled per-message trigger, and back; bus.wake notifies managed queues only.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(16);
SET LOCAL client_min_messages = warning;

DELETE FROM pgmq.q_llm_requests;
DELETE FROM pgmq.q_llm_results;
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('llm_requests', '{"id": "r1", "agent_id": "a", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}], "reply_to": "llm_results"}') AS m1 \gset
SELECT pgmq.send('llm_requests', '{"id": "r2", "agent_id": "a", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}], "reply_to": "llm_results"}') AS m2 \gset
SELECT pgmq.send('llm_requests', '{"id": "r3", "agent_id": "a", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}], "reply_to": "llm_results"}') AS m3 \gset
RESET ROLE;

SET LOCAL ROLE svc_nexus;
SELECT count(*) AS n_read FROM pgmq.read('llm_requests', 30, 3) \gset
RESET ROLE;
-- r2's delivery runs out and is read again: the first delivery of r2 is stale
UPDATE pgmq.q_llm_requests SET vt = clock_timestamp() - interval '1 second' WHERE msg_id = :m2;
SET LOCAL ROLE svc_nexus;
SELECT read_ct AS r2_ct FROM pgmq.read('llm_requests', 30, 1) \gset
SELECT string_agg(msg_id || ':' || status, ',' ORDER BY k) AS got
  FROM bus.reply('llm_requests', ARRAY[:m1, :m2, :m3, -1]::bigint[], ARRAY[1, 1, 1, 1],
                        ARRAY['llm_results', 'llm_results', 'llm_results', 'llm_results'],
                        ARRAY['{"request_id": "r1", "result": "one"}', '{"request_id": "r2", "result": "two"}',
                              '{"request_id": "r3", "result": "three"}', '{"request_id": "rx", "result": "none"}']::jsonb[])
       WITH ORDINALITY AS r(msg_id, status, k) \gset
RESET ROLE;
SELECT is(:'got', format('%s:acked,%s:stale,%s:acked,-1:gone', :m1, :m2, :m3),
          'bus.reply says acked / stale / gone per delivery, in the order given');
SELECT set_eq($$SELECT message->>'request_id' FROM pgmq.q_llm_results$$, ARRAY['r1', 'r3'],
              'only the acked deliveries'' results were sent');
SELECT set_eq(format('SELECT msg_id FROM pgmq.a_llm_requests WHERE msg_id IN (%s, %s, %s)', :m1, :m2, :m3),
              format('VALUES (%s::bigint), (%s)', :m1, :m3),
              'the acked requests are archived');
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_llm_requests WHERE msg_id = :m2 AND read_ct = :r2_ct),
          'the stale delivery''s request stays with its current reader');
SELECT is((SELECT headers->>'sender' FROM pgmq.q_llm_results WHERE message->>'request_id' = 'r1'), 'svc_nexus',
          'results sent through bus.reply carry the server-stamped sender');

SET LOCAL ROLE svc_nexus;
SELECT throws_ok($$SELECT * FROM bus.reply('llm_requests', ARRAY[1, 2]::bigint[], ARRAY[1], ARRAY['llm_results'],
                                          ARRAY['{}']::jsonb[])$$,
                 '22023', NULL, 'arrays of different lengths are refused');
SELECT throws_ok(format($$SELECT * FROM bus.reply('llm_requests', ARRAY[%s]::bigint[], ARRAY[%s],
                                                 ARRAY['llm_results'], ARRAY['{"result": "no id"}']::jsonb[])$$,
                        :m2, :r2_ct),
                 '22023', NULL, 'a malformed result is refused by the queue''s validation, and nothing of the batch commits');
RESET ROLE;
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_llm_requests WHERE msg_id = :m2),
          'the refused batch acked nothing');
SET LOCAL ROLE svc_singularity;
SELECT throws_ok(format($$SELECT * FROM bus.reply('llm_requests', ARRAY[%s]::bigint[], ARRAY[%s],
                                                 ARRAY['llm_results'], ARRAY['{"request_id": "r2", "result": "forged"}']::jsonb[])$$,
                        :m2, :r2_ct),
                 '42501', NULL, 'a sender cannot answer (and ack) requests through bus.reply: it is no consumer of llm_requests');
RESET ROLE;

-- Wake-ups
SELECT bus._set_wake('llm_results', 250);
SELECT is((SELECT throttle_interval_ms FROM pgmq.notify_insert_throttle WHERE queue_name = 'llm_results'), 250,
          'a throttle above 0 puts pgmq''s throttled per-message trigger on the queue');
SELECT hasnt_trigger('pgmq', 'q_llm_results', 'bus_wake', 'and takes the statement trigger off (one wake-up path)');
SELECT bus._set_wake('llm_results', 0);
SELECT has_trigger('pgmq', 'q_llm_results', 'bus_wake', 'throttle 0 puts the statement trigger back');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgmq.notify_insert_throttle WHERE queue_name = 'llm_results'),
          'and removes pgmq''s trigger and throttle row');
SELECT lives_ok($$SELECT bus._set_wake('llm_results', 0)$$, 'setting the same state again is a no-op');
SET LOCAL ROLE svc_nexus;
SELECT throws_ok($$SELECT bus._set_wake('llm_results', 250)$$, '42501', NULL,
                 'service roles may not change how a queue wakes its listeners');
SELECT lives_ok($$SELECT bus.wake(ARRAY['llm_results', 'no_such_queue'])$$,
                'any role may wake a queue''s listeners (a name that is no queue is ignored)');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
