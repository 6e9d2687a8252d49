-- Message validation on the send path: every error with its SQLSTATE and exact message, nothing
-- enqueued after a refused send, the envelope stamped on a valid one, and the jsonb_typeof trap.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(97);

-- Depth of every managed queue before the test; pg_temp.unchanged(q) says nothing was enqueued since.
CREATE TEMP TABLE t_depth (q text PRIMARY KEY, n bigint) ON COMMIT DROP;
CREATE FUNCTION pg_temp.depth(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM pgmq.%I', 'q_' || q) INTO n;
    RETURN n;
END $$;
INSERT INTO t_depth SELECT queue_name, pg_temp.depth(queue_name) FROM bus.queues;
CREATE FUNCTION pg_temp.unchanged(q text) RETURNS boolean LANGUAGE sql AS $$
    SELECT pg_temp.depth(q) = (SELECT n FROM t_depth WHERE t_depth.q = unchanged.q) $$;

-- A valid llm_request minus/plus one thing, so each case isolates one rule.
CREATE FUNCTION pg_temp.llm(patch jsonb DEFAULT '{}', drop_key text DEFAULT NULL) RETURNS jsonb LANGUAGE sql AS $$
    SELECT ('{"agent_id": "agent-1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}'::jsonb
            || patch) - coalesce(drop_key, '') $$;

-- The baseline: a valid message passes the validator (so each refusal below is about one rule).
SELECT lives_ok($$SELECT bus.validate_message('llm_requests', pg_temp.llm())$$, 'a valid llm_request passes validation');

-- 1. Not a JSON object.
SELECT throws_ok($$SELECT pgmq.send('llm_requests', '[1, 2]')$$, '22023',
                 'llm_requests: a message must be a JSON object, got array', 'a JSON array is refused (22023)');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the array');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', '"hello"')$$, '22023',
                 'llm_requests: a message must be a JSON object, got string', 'a JSON string is refused (22023)');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the string');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', NULL::jsonb)$$, '22023',
                 'llm_requests: a message must be a JSON object, got NULL', 'a NULL message is refused (22023)');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after NULL');
SELECT throws_ok($$SELECT bus.validate_message('llm_requests', 'null'::jsonb)$$, '22023',
                 'llm_requests: a message must be a JSON object, got null', 'JSON null is refused by bus.validate_message');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', '{bad json')$$, '22P02',
                 'invalid input syntax for type json', 'malformed JSON never reaches the queue (22P02)');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after malformed JSON');

-- 2. Missing required fields; the jsonb_typeof(NULL) trap: a missing key must be reported, never pass.
SELECT is(jsonb_typeof(NULL::jsonb) = 'string', NULL,
          'the trap: jsonb_typeof of a missing key compared to a type is NULL, which a CHECK lets pass');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', '{}')$$, '22023',
                 'llm_requests: required field "agent_id" is missing', 'an empty object: agent_id reported missing');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after {}');
SELECT throws_ok(format('SELECT pgmq.send(%L, %L::jsonb)', 'llm_requests', pg_temp.llm(drop_key => f)), '22023',
                 format('llm_requests: required field "%s" is missing', f),
                 format('llm_requests without "%s": reported missing, not passed', f))
  FROM unnest(ARRAY['agent_id', 'messages', 'task_type']) AS f;
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the three missing-field sends');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"agent_id": null}'))$$, '22023',
                 'llm_requests: required field "agent_id" is missing', 'a required field set to JSON null counts as missing');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after agent_id null');
SELECT throws_ok($$SELECT pgmq.send('job_requests', '{"code": "print(1)", "mode": "run"}')$$, '22023',
                 'job_requests: required field "language" is missing', 'job_requests without language: reported missing');
SELECT ok(pg_temp.unchanged('job_requests'), 'nothing enqueued on job_requests');
SELECT throws_ok($$SELECT pgmq.send('approval_responses', '{"request_id": "r1", "decided_by": "alice"}')$$, '22023',
                 'approval_responses: required field "approved" is missing', 'a missing boolean field is reported missing');
SELECT ok(pg_temp.unchanged('approval_responses'), 'nothing enqueued on approval_responses');
SELECT throws_ok($$SELECT pgmq.send('dead_letters', '{"queue": "llm_requests", "error": "boom", "attempts": 1}')$$, '22023',
                 'dead_letters: required field "message" is missing', 'a missing field of type any is reported missing');
SELECT ok(pg_temp.unchanged('dead_letters'), 'nothing enqueued on dead_letters');
-- Rules per message type: learned_patterns needs artifacts, knowledge_summary needs patterns.
SELECT throws_ok($$SELECT pgmq.send('learned_patterns', '{"type": "knowledge_summary", "instance_id": "i1"}')$$, '22023',
                 'learned_patterns: required field "patterns" is missing', 'knowledge_summary without patterns is refused');
SELECT throws_ok($$SELECT pgmq.send('learned_patterns', '{"instance_id": "i1"}')$$, '22023',
                 'learned_patterns: required field "artifacts" is missing',
                 'learned_patterns (type stamped) without artifacts is refused');
SELECT ok(pg_temp.unchanged('learned_patterns'), 'nothing enqueued on learned_patterns');
SELECT throws_ok($$SELECT pgmq.send('knowledge_updates', '{"type": "learning_exported", "branch": "main"}')$$, '22023',
                 'knowledge_updates: required field "artifacts_count" is missing', 'learning_exported without artifacts_count is refused');
SELECT ok(pg_temp.unchanged('knowledge_updates'), 'nothing enqueued on knowledge_updates');
-- Optional but not nullable.
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"model": null}'))$$, '22023',
                 'llm_requests: field "model" must not be null', 'an optional non-nullable field set to null is refused');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after model null');

-- 3. Wrong JSON types.
SELECT throws_ok(format('SELECT pgmq.send(%L, %L::jsonb)', q, m), '22023', e, d)
  FROM (VALUES
    ('llm_requests', pg_temp.llm('{"agent_id": 5}'), 'llm_requests: field "agent_id" must be a JSON string, got number',
     'a number where a string belongs is refused'),
    ('llm_requests', pg_temp.llm('{"messages": "hi"}'), 'llm_requests: field "messages" must be a JSON array, got string',
     'a string where an array belongs is refused'),
    ('llm_requests', pg_temp.llm('{"messages": {"role": "user"}}'), 'llm_requests: field "messages" must be a JSON array, got object',
     'an object where an array belongs is refused'),
    ('llm_requests', pg_temp.llm('{"max_tokens": 1.5}'), 'llm_requests: field "max_tokens" must be a JSON integer, got number',
     'a fraction where an integer belongs is refused'),
    ('llm_requests', pg_temp.llm('{"max_tokens": "100"}'), 'llm_requests: field "max_tokens" must be a JSON integer, got string',
     'a numeric string where an integer belongs is refused'),
    ('approval_responses', '{"request_id": "r1", "decided_by": "alice", "approved": "yes"}'::jsonb,
     'approval_responses: field "approved" must be a JSON boolean, got string', 'a string where a boolean belongs is refused'),
    ('approval_responses', '{"request_id": "r1", "decided_by": "alice", "approved": 1}'::jsonb,
     'approval_responses: field "approved" must be a JSON boolean, got number', 'a number where a boolean belongs is refused'),
    ('job_requests', '{"code": "x", "language": "python", "mode": "run", "timeout_s": "30"}'::jsonb,
     'job_requests: field "timeout_s" must be a JSON number, got string', 'a string where a number belongs is refused'),
    ('llm_results', '{"request_id": "r1", "usage": [1]}'::jsonb,
     'llm_results: field "usage" must be a JSON object, got array', 'an array where an object belongs is refused'),
    ('job_results', '{"request_id": 42}'::jsonb,
     'job_results: field "request_id" must be a JSON string, got number', 'a numeric request_id is refused')
  ) AS t(q, m, e, d);
SELECT ok(pg_temp.unchanged(q), format('nothing enqueued on %s after the wrong-type sends', q))
  FROM unnest(ARRAY['llm_requests', 'approval_responses', 'job_requests', 'llm_results', 'job_results']) AS q;

-- 4. Empty values in nonempty fields.
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"agent_id": ""}'))$$, '22023',
                 'llm_requests: field "agent_id" must not be empty', 'an empty string in a nonempty field is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"messages": []}'))$$, '22023',
                 'llm_requests: field "messages" must not be empty', 'an empty array in a nonempty field is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"reply_to": ""}'))$$, '22023',
                 'llm_requests: field "reply_to" must not be empty', 'an empty reply_to is refused');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the empty-value sends');
SELECT lives_ok($$SELECT bus.validate_message('approval_requests',
                  '{"agent_id": "a", "file_path": "x.py", "diff": ""}')$$,
                'an empty string in a field that may be empty (approval diff) passes');

-- 5. Values outside the allowed list.
SELECT throws_ok($$SELECT pgmq.send('job_requests', '{"code": "x", "language": "python", "mode": "exec"}')$$, '22023',
                 'job_requests: field "mode" is "exec", which is not one of ["run", "validate", "lint"]',
                 'job mode "exec" is refused with the allowed values');
SELECT throws_ok($$SELECT pgmq.send('job_requests', '{"code": "x", "language": "python", "mode": "RUN"}')$$, '22023',
                 'job_requests: field "mode" is "RUN", which is not one of ["run", "validate", "lint"]',
                 'allowed values are case-sensitive');
SELECT ok(pg_temp.unchanged('job_requests'), 'nothing enqueued after the bad modes');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"type": "llm_result"}'))$$, '22023',
                 'llm_requests: field "type" is "llm_result", which is not one of ["llm_request"]',
                 'a result type on a request queue is refused');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the wrong type');
SELECT lives_ok(format('SELECT bus.validate_message(%L, %L)', 'job_requests',
                       jsonb_build_object('code', 'x', 'language', 'python', 'mode', m)),
                format('job mode "%s" is accepted', m))
  FROM unnest(ARRAY['run', 'validate', 'lint']) AS m;

-- 6. Envelope fields: id any 1-128 printable characters (the seeds' UUIDs too), created_at an ISO-8601
-- timestamp, source a string.
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"id": ""}'))$$, '22023',
                 'llm_requests: field "id" must be a string of 1 to 128 printable characters, got ""',
                 'an empty id is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"id": 123}'))$$, '22023',
                 'llm_requests: field "id" must be a string of 1 to 128 printable characters, got 123',
                 'a numeric id is refused');
SELECT throws_ok(format('SELECT pgmq.send(%L, pg_temp.llm(%L))', 'llm_requests', json_build_object('id', repeat('x', 129))), '22023',
                 NULL, 'an id over 128 characters is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"created_at": "not a time"}'))$$, '22023',
                 'llm_requests: field "created_at" must be an ISO-8601 timestamp string (e.g. 2026-01-31T12:00:00Z), got "not a time"',
                 'an unparseable created_at is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"created_at": 1700000000}'))$$, '22023',
                 'llm_requests: field "created_at" must be an ISO-8601 timestamp string (e.g. 2026-01-31T12:00:00Z), got 1700000000',
                 'an epoch number as created_at is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"source": 7}'))$$, '22023',
                 'llm_requests: field "source" must be a string, got number', 'a numeric source is refused');
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the bad envelopes');

-- 7. Size limits: instance_heartbeat allows 64 KiB, llm_requests 1 MiB (54000 program_limit_exceeded).
SELECT throws_ok(format('SELECT pgmq.send(%L, %L::jsonb)', 'instance_heartbeat', m), '54000',
                 format('instance_heartbeat: message is %s bytes, over the limit of 65536 bytes', octet_length(m::text)),
                 'a 70 kB heartbeat is refused with its size and the limit')
  FROM (SELECT jsonb_build_object('instance_id', 'i1', 'service', 'nexus', 'at', '2026-01-01T00:00:00Z',
                                  'stats', jsonb_build_object('pad', repeat('x', 70000))) AS m) x;
SELECT ok(pg_temp.unchanged('instance_heartbeat'), 'nothing enqueued on instance_heartbeat');
SELECT throws_ok(format('SELECT pgmq.send(%L, %L::jsonb)', 'llm_requests', m), '54000',
                 format('llm_requests: message is %s bytes, over the limit of 1048576 bytes', octet_length(m::text)),
                 'a message over 1 MiB is refused with its size and the limit')
  FROM (SELECT pg_temp.llm(jsonb_build_object('messages', jsonb_build_array(
                   jsonb_build_object('role', 'user', 'content', repeat('y', 1100000))))) AS m) x;
SELECT ok(pg_temp.unchanged('llm_requests'), 'nothing enqueued after the oversized message');
SELECT lives_ok(format('SELECT bus.validate_message(%L, %L::jsonb)', 'instance_heartbeat',
                       jsonb_build_object('instance_id', 'i1', 'service', 'nexus', 'at', 'now',
                                          'stats', jsonb_build_object('pad', repeat('x', 60000)))),
                'a 60 kB heartbeat, under the limit, passes');

-- 8. reply_to must name a queue of the result kind.
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"reply_to": "job_results"}'))$$, '22023',
                 'llm_requests: reply_to "job_results" is not a llm_results queue', 'reply_to naming another result kind is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"reply_to": "llm_requests"}'))$$, '22023',
                 'llm_requests: reply_to "llm_requests" is not a llm_results queue', 'reply_to naming a request queue is refused');
SELECT throws_ok($$SELECT pgmq.send('llm_requests', pg_temp.llm('{"reply_to": "llm_results_nobody"}'))$$, '22023',
                 'llm_requests: reply_to "llm_results_nobody" is not a llm_results queue', 'reply_to naming no queue is refused');
SELECT throws_ok($$SELECT pgmq.send('job_requests', '{"code": "x", "language": "python", "mode": "run", "reply_to": "llm_results"}')$$,
                 '22023', 'job_requests: reply_to "llm_results" is not a job_results queue', 'a job request replying to llm_results is refused');
SELECT ok(pg_temp.unchanged('llm_requests') AND pg_temp.unchanged('job_requests'), 'nothing enqueued after the bad reply_to sends');
SELECT lives_ok($$SELECT bus.validate_message('llm_requests', pg_temp.llm('{"reply_to": "llm_results"}'))$$,
                'reply_to naming the llm_results queue passes');

-- 9. Unknown queues and queue names with SQL in them.
SELECT throws_ok($$SELECT bus.validate_message('no_such_queue', '{}')$$, '42P01',
                 'unknown queue "no_such_queue"', 'bus.validate_message: an unknown queue is 42P01 with its name');
SELECT throws_ok($$SELECT pgmq.send('no_such_queue', '{"a": 1}')$$, '42P01',
                 'relation "pgmq.q_no_such_queue" does not exist', 'pgmq.send to an unknown queue is 42P01 undefined_table');
SELECT throws_ok($$SELECT pgmq.send('llm_requests; DELETE FROM bus.queues; --', '{"a": 1}')$$, 'P0001',
                 'queue name contains invalid characters: $, ;, --, or \''',
                 'pgmq.send with SQL in the queue name: pgmq.format_table_name refuses it (P0001)');
SELECT throws_ok($$SELECT pgmq.send('llm_requests'' OR ''1''=''1', '{"a": 1}')$$, 'P0001',
                 'queue name contains invalid characters: $, ;, --, or \''',
                 'pgmq.send with a quote in the queue name is refused (P0001)');
SELECT throws_ok($$SELECT pgmq.send('llm_requests WHERE true', '{"a": 1}')$$, '42P01',
                 'relation "pgmq.q_llm_requests where true" does not exist',
                 'a queue name with SQL words is quoted as one identifier (42P01), never run');
SELECT throws_ok($$SELECT bus.validate_message('llm_requests; DROP TABLE bus.queues', '{}')$$, '42P01',
                 'unknown queue "llm_requests; DROP TABLE bus.queues"', 'bus.validate_message treats SQL in a name as an unknown queue');
SELECT throws_ok($$SELECT bus.ensure_queue('x; DROP TABLE bus.queues', 'llm_requests')$$, '42602',
                 'invalid queue name "x; DROP TABLE bus.queues"', 'bus.ensure_queue refuses a name with SQL in it (42602 invalid_name)');
SELECT throws_ok($$SELECT bus.ensure_queue('Bad-Name', 'llm_requests')$$, '42602',
                 'invalid queue name "Bad-Name"', 'bus.ensure_queue refuses upper case and dashes (42602)');
SELECT is((SELECT count(*)::int FROM bus.queues WHERE queue_name !~ '^[a-z][a-z0-9_]{2,46}$'), 0,
          'no odd name was registered in bus.queues');
SELECT ok(to_regclass('bus.queues') IS NOT NULL AND pg_temp.unchanged('llm_requests'),
          'bus.queues still exists and nothing was enqueued on llm_requests');

-- 10. A valid message, sent as a service with no envelope, gets id/type/source/created_at stamped.
SET LOCAL ROLE svc_singularity;
SELECT pgmq.send('llm_requests', '{"agent_id": "agent-1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}') AS ok_id \gset
RESET ROLE;
SELECT is(pg_temp.depth('llm_requests'), (SELECT n + 1 FROM t_depth WHERE q = 'llm_requests'), 'the valid message was enqueued (one row)');
SELECT ok(ops.is_ulid(message->>'id'), 'a ULID id was stamped') FROM pgmq.q_llm_requests WHERE msg_id = :ok_id;
SELECT is(message->>'type', 'llm_request', 'type was stamped with the queue''s message type') FROM pgmq.q_llm_requests WHERE msg_id = :ok_id;
SELECT is(message->>'source', 'singularity', 'source was stamped with the sending service') FROM pgmq.q_llm_requests WHERE msg_id = :ok_id;
SELECT ok((message->>'created_at')::timestamptz BETWEEN now() - interval '1 minute' AND clock_timestamp(),
          'created_at was stamped with the send time') FROM pgmq.q_llm_requests WHERE msg_id = :ok_id;
SELECT matches(message->>'created_at', '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$', 'created_at is ISO-8601 UTC with microseconds')
  FROM pgmq.q_llm_requests WHERE msg_id = :ok_id;
SELECT is(message - 'id' - 'type' - 'source' - 'created_at' - 'timestamp',
          '{"agent_id": "agent-1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}'::jsonb,
          'the sender''s fields are stored unchanged') FROM pgmq.q_llm_requests WHERE msg_id = :ok_id;
-- Given envelope values are kept as they are.
SELECT is(bus.validate_message('llm_requests', pg_temp.llm(
              '{"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "source": "singularity-7", "created_at": "2026-01-02T03:04:05Z"}'))
          - 'agent_id' - 'task_type' - 'messages',
          '{"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "source": "singularity-7", "created_at": "2026-01-02T03:04:05Z", "type": "llm_request",
            "timestamp": "2026-01-02T03:04:05Z"}'::jsonb,
          'a given id, source and created_at are kept; type is added, and the seeds'' timestamp (the same time)');
SELECT is(bus.validate_message('dead_letters', '{"queue": "q", "message": null, "error": "e", "attempts": 1}')->'message',
          'null'::jsonb, 'a nullable field of type any may be null (dead letter of a NULL message)');

SELECT * FROM finish();
ROLLBACK;
