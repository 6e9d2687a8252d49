-- Trust on the bus (DESIGN.md 8b): the server stamps who sent a message (headers.sender, source,
-- the instance) from the sending role; reply_to must be the sender's own reply queue; a service
-- may not speak for another service in heartbeats; only a consumer's failure path creates dead
-- letters, from the real message; consumers cannot rewrite a held message; a replay keeps the
-- original sender and re-checks the flow table; nesting depth is bounded; a message delivered
-- max_attempts times without being settled is dead-lettered by bus.read.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(59);

SET LOCAL client_min_messages = warning;
DELETE FROM pgmq.q_job_requests;
DELETE FROM pgmq.q_llm_requests;
DELETE FROM pgmq.q_dead_letters;
DELETE FROM pgmq.q_pattern_messages;
DELETE FROM pgmq.q_instance_heartbeat;
CREATE ROLE svc_singularity_t35 LOGIN;
SET LOCAL ROLE own_shared_queue;
SELECT count(*) FROM bus.ensure_instance('t35', 'svc_singularity_t35');
RESET ROLE;

-- 1. Identity stamped by the server from the sending role.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('llm_requests', '{"agent_id": "a", "task_type": "chat", "messages": ["hi"], "source": "nexus"}',
                 '{"sender": "svc_nexus", "x-trace": "t1"}'::jsonb) AS s1 \gset
RESET ROLE;
SELECT is((SELECT message->>'source' FROM pgmq.q_llm_requests WHERE msg_id = :s1), 'singularity',
          'source is the sending service, stamped by the server (the body said nexus)');
SELECT is((SELECT headers->>'sender' FROM pgmq.q_llm_requests WHERE msg_id = :s1), 'svc_singularity',
          'headers.sender is the sending role, stamped by the server (the sender claimed svc_nexus)');
SELECT is((SELECT headers->>'x-trace' FROM pgmq.q_llm_requests WHERE msg_id = :s1), 't1',
          'the sender''s own headers are kept');
SELECT is((SELECT headers->>'content_sha256' FROM pgmq.q_llm_requests WHERE msg_id = :s1),
          (SELECT ops.request_hash(message) FROM pgmq.q_llm_requests WHERE msg_id = :s1),
          'headers.content_sha256 is the server''s hash of the request');
SELECT is(ops.request_hash('{"id": "a", "created_at": "x", "source": "y", "reply_to": "z", "k": 1}'),
          ops.request_hash('{"id": "b", "k": 1, "timestamp": "w"}'),
          'the request hash leaves the envelope out (id, times, source, reply_to)');
SELECT isnt(ops.request_hash('{"k": 1}'), ops.request_hash('{"k": 2}'), 'and changes with the content');

SET LOCAL ROLE svc_singularity_t35;
SELECT pgmq.send('pattern_messages', '{"patterns": []}') AS p1 \gset
RESET ROLE;
SELECT is((SELECT message->>'instance_id' FROM pgmq.q_pattern_messages WHERE msg_id = :p1), 't35',
          'an instance''s message gets its instance_id from the sending role');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity_t35; SELECT pgmq.send('pattern_messages', '{"instance_id": "default", "patterns": []}')$$,
                 '42501', 'pattern_messages: svc_singularity_t35 is instance "t35" and may not send as instance "default"',
                 'an instance may not send as another instance (42501)');

-- 2. Heartbeats: a service speaks only for itself.
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT pgmq.send('instance_heartbeat',
                   '{"instance_id": "default", "service": "nexus", "at": "2026-01-01T00:00:00Z"}')$$,
                 '42501', 'instance_heartbeat: svc_genesis is service "genesis" and may not send as service "nexus"',
                 'genesis may not keep nexus''s heartbeat alive (42501)');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT pgmq.send('instance_heartbeat',
                   '{"instance_id": "t35", "service": "singularity", "at": "2026-01-01T00:00:00Z"}')$$,
                 '42501', NULL, 'an instance may not beat for another instance (42501)');
SET LOCAL ROLE svc_genesis;
SELECT lives_ok($$SELECT pgmq.send('instance_heartbeat', '{"instance_id": "host-1", "service": "genesis", "at": "2026-01-01T00:00:00Z"}')$$,
                'genesis beats for itself');
RESET ROLE;

-- 3. reply_to must be one of the sender's own reply queues.
SELECT throws_ok($$SET LOCAL ROLE svc_singularity_t35; SELECT pgmq.send('llm_requests',
                   '{"agent_id": "a", "task_type": "chat", "messages": ["hi"], "reply_to": "llm_results"}')$$,
                 '42501', 'llm_requests: reply_to "llm_results" belongs to instance "default", not to svc_singularity_t35 (instance "t35")',
                 'an instance may not route replies to another instance''s queue (42501)');
SET LOCAL ROLE svc_singularity_t35;
SELECT lives_ok($$SELECT pgmq.send('llm_requests', '{"agent_id": "a", "task_type": "chat", "messages": ["hi"], "reply_to": "llm_results_t35"}')$$,
                'an instance may name its own reply queue');
RESET ROLE;

-- 4. Dead letters come only from a consumer's failure path.
SELECT throws_ok(format($$SET LOCAL ROLE %I; SELECT pgmq.send('dead_letters', '{"queue": "job_requests", "message": {"code": "x", "language": "python", "mode": "run"}, "error": "e", "attempts": 1}')$$, r),
                 '42501', 'permission denied for table q_dead_letters', format('%s may not send a dead letter (42501)', r))
  FROM unnest(ARRAY['svc_singularity', 'svc_genesis', 'svc_nexus', 'svc_centralcloud']) AS r;
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('job_requests', '{"code": "print(42)", "language": "python", "mode": "run", "agent_id": "a"}') AS j1 \gset
RESET ROLE;
SET LOCAL ROLE svc_genesis;
SELECT read_ct AS j1_ct FROM pgmq.read('job_requests', 30, 1) \gset
RESET ROLE;
SELECT throws_ok(format($$SET LOCAL ROLE svc_genesis; UPDATE pgmq.q_job_requests SET message = message || '{"code": "evil"}' WHERE msg_id = %s$$, :j1),
                 '42501', 'permission denied for table q_job_requests', 'a consumer may not rewrite a held message (42501)');
SELECT throws_ok(format($$SET LOCAL ROLE svc_genesis; UPDATE pgmq.q_job_requests SET headers = '{"sender": "svc_nexus"}' WHERE msg_id = %s$$, :j1),
                 '42501', 'permission denied for table q_job_requests', 'a consumer may not rewrite a held message''s headers (42501)');
SELECT throws_ok(format($$SET LOCAL ROLE svc_nexus; SELECT bus.dead_letter('job_requests', %s, %s, 'not mine')$$, :j1, :j1_ct),
                 '42501', NULL, 'a role that does not consume the queue may not dead-letter its messages (42501)');
SELECT throws_ok(format($$SET LOCAL ROLE svc_nexus; SELECT bus.fail('job_requests', %s, %s, 'not mine', 1)$$, :j1, :j1_ct),
                 '42501', NULL, 'nor fail them into the dead-letter queue (42501)');
-- The internal dead-letter routine trusts a claimed caller only if the session may act as it.
SET LOCAL SESSION AUTHORIZATION svc_nexus;
SELECT throws_ok(format($$SELECT bus._bury('svc_genesis', 'job_requests', %s, %s, 'forged')$$, :j1, :j1_ct),
                 '42501', NULL, 'svc_nexus may not call the internal routine claiming to be svc_genesis (42501)');
RESET SESSION AUTHORIZATION;
SET LOCAL SESSION AUTHORIZATION svc_genesis;
SELECT bus.dead_letter('job_requests', :j1, :j1_ct, 'poison for the test') AS j1_dl \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'j1_dl'::text, 'dead_lettered', 'the consumer dead-letters the message it holds');
SELECT msg_id AS dl1, message AS dl1_msg, headers AS dl1_h FROM pgmq.q_dead_letters
 WHERE (message->>'msg_id')::bigint = :j1 \gset
SELECT is((:'dl1_msg'::jsonb)->'message'->>'code', 'print(42)', 'the dead letter carries the real message');
SELECT is((:'dl1_msg'::jsonb)->>'sender', 'svc_singularity', 'and its original sender, recorded by the server');
SELECT is((:'dl1_msg'::jsonb)->>'dead_lettered_by', 'svc_genesis', 'and the consumer that gave up on it');
SELECT is((:'dl1_h'::jsonb)->>'sender', 'svc_singularity', 'headers.sender of the dead letter is the original sender');
SELECT is((:'dl1_h'::jsonb)->>'dead_letter_of', 'job_requests', 'headers record the queue it died on');

-- 5. Replay keeps the sender and re-checks the flow table.
SET LOCAL ROLE own_shared_queue;
SELECT bus.dlq_replay(:dl1) AS rp1 \gset
RESET ROLE;
SELECT is((SELECT headers->>'sender' FROM pgmq.q_job_requests WHERE msg_id = :rp1), 'svc_singularity',
          'the replayed message keeps its original sender');
SELECT is((SELECT message->>'source' FROM pgmq.q_job_requests WHERE msg_id = :rp1), 'singularity',
          'and its source');
SELECT is((SELECT message->>'code' FROM pgmq.q_job_requests WHERE msg_id = :rp1), 'print(42)', 'and its content');
-- A dead letter the bus did not create (inserted by hand, or from before senders were recorded) is not replayed.
SELECT pgmq.send('dead_letters', '{"queue": "job_requests", "message": {"code": "x", "language": "python", "mode": "run"}, "error": "e", "attempts": 1}') AS dl_hand \gset
SELECT throws_ok(format('SET LOCAL ROLE own_shared_queue; SELECT bus.dlq_replay(%s)', :dl_hand), '42501',
                 NULL, 'a dead letter without the bus''s record of its origin is not replayed (42501)');
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_dead_letters WHERE msg_id = :dl_hand), 'and it stays in the DLQ');
SELECT throws_ok(format('SET LOCAL ROLE svc_nexus; SELECT bus.dashboard_dlq_replay(%s)', :dl_hand), '42501',
                 NULL, 'nor through the page''s replay (42501)');
-- A recorded sender that may no longer send to the queue (flow table changed) is refused.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('job_requests', '{"code": "print(7)", "language": "python", "mode": "run"}') AS j2 \gset
RESET ROLE;
SET LOCAL SESSION AUTHORIZATION svc_genesis;
SELECT read_ct AS j2_ct FROM pgmq.read('job_requests', 30, 1, '{"code": "print(7)"}') \gset
SELECT bus.dead_letter('job_requests', :j2, :j2_ct, 'x') AS j2_dl \gset
RESET SESSION AUTHORIZATION;
SELECT msg_id AS dl2 FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :j2 \gset
REVOKE INSERT ON pgmq.q_job_requests FROM svc_singularity;
SELECT throws_ok(format('SET LOCAL ROLE own_shared_queue; SELECT bus.dlq_replay(%s)', :dl2), '42501',
                 'dead letter ' || :dl2 || ': its sender svc_singularity may not send to job_requests (flow table)',
                 'a replay re-checks the flow table for the original sender (42501)');
SET LOCAL ROLE own_shared_queue;
SELECT bus.apply_grants('job_requests');
RESET ROLE;

-- 6. Nesting depth is bounded at send.
SELECT throws_ok(format('SELECT pgmq.send(%L, %L::jsonb)', 'llm_requests',
                        '{"agent_id": "a", "task_type": "chat", "messages": [' || repeat('[', 100) || repeat(']', 100) || ']}'),
                 '54000', NULL, 'a message nested 100 levels deep is refused at send (54000)');
SELECT throws_ok(format('SELECT pgmq.send(%L, %L::jsonb)', 'llm_requests',
                        '{"agent_id": "a", "task_type": "chat", "messages": [' || repeat('{"a":', 3000) || '1' || repeat('}', 3000) || ']}'),
                 '54000', NULL, 'and 3,000 levels deep (54000)');
SELECT lives_ok(format('SELECT pgmq.send(%L, %L::jsonb)', 'llm_requests',
                       '{"agent_id": "a", "task_type": "chat", "messages": [' || repeat('[', 30) || repeat(']', 30) || ']}'),
                'a message nested 32 levels deep is accepted');
SELECT is(bus.json_depth('{"a": [1, {"b": [[]]}]}'), 5, 'bus.json_depth counts object and array levels');
SELECT is(bus.json_depth('7'), 0, 'a scalar has depth 0');

-- 7. bus.read: what was delivered max_attempts times without being settled is dead-lettered, not delivered again.
DELETE FROM pgmq.q_llm_requests;
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('llm_requests', '{"agent_id": "a", "task_type": "chat", "messages": ["hi"]}') AS r1 \gset
SELECT pgmq.send('llm_requests', '{"agent_id": "b", "task_type": "chat", "messages": ["hi"]}') AS r2 \gset
RESET ROLE;
UPDATE pgmq.q_llm_requests SET read_ct = 5 WHERE msg_id = :r1;   -- delivered 5 times (max_attempts 5), never settled
SET LOCAL ROLE svc_nexus;
SELECT array_agg(msg_id)::text AS got FROM bus.read('llm_requests', 30, 10) \gset
RESET ROLE;
SELECT is(:'got'::bigint[], ARRAY[:r2]::bigint[], 'bus.read delivers only the healthy message');
SELECT is((SELECT message->>'error' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :r1),
          'delivered 6 times without being acked or failed (max_attempts 5): the consumer crashed on it or could not decode it',
          'the exhausted one is dead-lettered with the reason');
SELECT is((SELECT message->>'sender' FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = :r1), 'svc_singularity',
          'with its sender');
SELECT is((SELECT headers->>'sender' FROM bus.read('llm_requests', 0, 1) LIMIT 1), NULL,
          'nothing else is visible (the healthy one is leased)');
SELECT ok((SELECT headers ? 'content_sha256' AND headers ? 'sender' FROM pgmq.q_llm_requests WHERE msg_id = :r2),
          'bus.read returns the server''s headers');
-- Deliveries handed back without an attempt (shutdown, database lost, busy elsewhere) do not count.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('llm_requests', '{"agent_id": "c", "task_type": "chat", "messages": ["hi"]}') AS r3 \gset
RESET ROLE;
UPDATE pgmq.q_llm_requests SET read_ct = 4 WHERE msg_id = :r3;
SET LOCAL ROLE svc_nexus;
SELECT bus.give_back('llm_requests', :r3, 4, 0) AS gb1 \gset
SELECT read_ct AS r3_ct FROM bus.read('llm_requests', 0, 1, '{"agent_id": "c"}') \gset
SELECT bus.give_back('llm_requests', :r3, :r3_ct, 0) AS gb2 \gset
SELECT msg_id AS r3_again FROM bus.read('llm_requests', 30, 1, '{"agent_id": "c"}') \gset
RESET ROLE;
SELECT is(:'gb1'::text || ' ' || :'gb2', 'ok ok', 'the consumer hands the message back twice');
SELECT is(:r3_again::bigint, :r3::bigint, 'six deliveries, two handed back: four attempts, still delivered');
SELECT throws_ok(format('SET LOCAL ROLE svc_genesis; SELECT bus.give_back(%L, %s, 6, 0)', 'llm_requests', :r3), '42501', NULL,
                 'a role that does not consume the queue may not give its messages back (42501)');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT * FROM bus.read('llm_requests', 30, 1)$$, '42501', NULL,
                 'bus.read keeps the flow table: genesis may not read llm_requests (42501)');
SELECT throws_ok($$SELECT * FROM bus.read('nope_queue', 30, 1)$$, '42P01', NULL, 'bus.read of an unknown queue is 42P01');
-- A conditional read (the agent waiting for one reply) goes through bus.read too.
SET LOCAL ROLE svc_nexus;
SELECT pgmq.send('llm_results', '{"request_id": "q-1", "result": "one"}') AS lr1 \gset
SELECT pgmq.send('llm_results', '{"request_id": "q-2", "result": "two"}') AS lr2 \gset
RESET ROLE;
SET LOCAL ROLE svc_singularity;
SELECT msg_id AS cond FROM bus.read('llm_results', 30, 1, '{"request_id": "q-2"}') \gset
RESET ROLE;
SELECT is(:cond::bigint, :lr2::bigint, 'bus.read with a condition returns the matching message');

-- 8. The dead-letter queue itself: only the bus's path writes it, so its records are trusted.
SELECT is((SELECT count(*)::int FROM bus.flows WHERE kind = 'dead_letters'), 0, 'no service has a flow to dead_letters');
SELECT is_empty($$SELECT r FROM unnest(ARRAY['svc_singularity', 'svc_genesis', 'svc_nexus', 'svc_centralcloud']) r
                   WHERE has_table_privilege(r, 'pgmq.q_dead_letters', 'INSERT')$$, 'no service role may insert into dead_letters');
SELECT is_empty($$SELECT queue_name, r FROM bus.queues, unnest(ARRAY['svc_singularity', 'svc_genesis', 'svc_nexus', 'svc_centralcloud']) r
                   WHERE has_column_privilege(r, format('pgmq.%I', 'q_' || queue_name), 'message', 'UPDATE')
                      OR has_column_privilege(r, format('pgmq.%I', 'q_' || queue_name), 'headers', 'UPDATE')$$,
                'no service role may update the message or headers of any queue');
SELECT ok(has_column_privilege('svc_genesis', 'pgmq.q_job_requests', 'vt', 'UPDATE'), 'a consumer may still move vt (pgmq.read, set_vt)');

-- 9. The trusted path honours a given sender only from the owner (replays), never from a service role.
SELECT pgmq.send('job_requests', '{"code": "1", "language": "python", "mode": "run"}'::jsonb, '{"sender": "svc_singularity_t35"}'::jsonb) AS own1 \gset
SELECT is((SELECT headers->>'sender' FROM pgmq.q_job_requests WHERE msg_id = :own1), 'svc_singularity_t35',
          'the operator may send on behalf of a service (replay path)');
SELECT is((SELECT message->>'source' FROM pgmq.q_job_requests WHERE msg_id = :own1), 'singularity',
          'and the identity of that service is stamped');
SELECT pgmq.send('job_requests', '{"code": "1", "language": "python", "mode": "run", "source": "ops-team"}') AS own2 \gset
SELECT is((SELECT message->>'source' FROM pgmq.q_job_requests WHERE msg_id = :own2), 'ops-team',
          'an operator''s own message keeps the source it names');
SELECT is((SELECT headers->>'sender' FROM pgmq.q_job_requests WHERE msg_id = :own2), 'postgres',
          'with the operator as sender');

SELECT * FROM finish();
ROLLBACK;
