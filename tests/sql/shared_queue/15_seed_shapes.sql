-- The seeds' clients' message shapes are accepted as they are (issue: "the seeds' clients work
-- unchanged"): no agent_id on approvals and questions, no mode on jobs (a run), UUID ids, the seeds'
-- `timestamp`, no instance_id (the sending instance is stamped), usage_count / success_rate.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(13);

SET LOCAL ROLE svc_singularity;
SELECT lives_ok($$SELECT pgmq.send('approval_requests', '{"file_path": "a.py", "diff": "+1"}')$$,
                'an approval request without agent_id is accepted');
SELECT lives_ok($$SELECT pgmq.send('question_requests', '{"question": "ok?"}')$$,
                'a question without agent_id is accepted');
SELECT pgmq.send('job_requests', '{"code": "print(1)", "language": "python"}') AS j \gset
SELECT pgmq.send('llm_requests', '{"id": "550e8400-e29b-41d4-a716-446655440000", "agent_id": "a", "task_type": "chat",
                                   "messages": ["hi"], "timestamp": "2025-10-25T10:00:00Z"}') AS u \gset
SELECT pgmq.send('learned_patterns', '{"type": "learned_patterns", "source": "singularity-2", "artifacts": ["elixir.genserver"],
                                       "usage_count": 500, "success_rate": 0.95, "timestamp": "2025-10-25T10:00:00Z"}') AS l \gset
RESET ROLE;
SELECT is((SELECT message->>'mode' FROM pgmq.q_job_requests WHERE msg_id = :j), 'run', 'a job without mode is a run');
SELECT is((SELECT message->>'id' FROM pgmq.q_llm_requests WHERE msg_id = :u), '550e8400-e29b-41d4-a716-446655440000',
          'a UUID id is kept');
SELECT is((SELECT message->>'created_at' FROM pgmq.q_llm_requests WHERE msg_id = :u), '2025-10-25T10:00:00Z',
          'the seeds'' timestamp is the envelope time');
SELECT is((SELECT message->>'instance_id' FROM pgmq.q_learned_patterns WHERE msg_id = :l), 'default',
          'learned_patterns without instance_id gets the sending instance');
SELECT is((SELECT message->>'source' FROM pgmq.q_learned_patterns WHERE msg_id = :l), 'singularity',
          'source is the service''s name, not what the client wrote');
SELECT is((SELECT (message->>'usage_count')::int FROM pgmq.q_learned_patterns WHERE msg_id = :l), 500,
          'usage_count is kept for CentralCloud to fold');
SELECT ok((SELECT message ? 'timestamp' AND message ? 'created_at' FROM pgmq.q_job_requests WHERE msg_id = :j),
          'every message gets both envelope times');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT pgmq.send('job_requests', '{"code": "x", "language": "python", "mode": "walk"}')$$,
                 '22023', NULL, 'what is really malformed is still refused (an unknown mode)');
-- seed 001's own test: pgmq.send('llm_requests', '{"agent_id": "test", "task": "hello"}')
SELECT is(bus.validate_message('llm_requests', '{"agent_id": "test", "task": "hello"}')->'messages',
          '[{"role": "user", "content": "hello"}]'::jsonb, 'seed 001''s "task" is asked as one user message');
SELECT is(bus.validate_message('llm_requests', '{"agent_id": "test", "task": "hello"}')->>'task_type', 'general',
          'task_type defaults to general (the router''s default route serves it)');
SELECT throws_ok($$SELECT bus.validate_message('llm_requests', '{"agent_id": "test", "task": 5}')$$, '22023',
                 'llm_requests: required field "messages" is missing', 'a task that is not text is no shorthand');
SELECT * FROM finish();
ROLLBACK;
