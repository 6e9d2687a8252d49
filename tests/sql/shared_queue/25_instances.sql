-- A second Singularity instance (created inside this transaction, as the owner role does it):
-- its own reply/inbox queues, consumable only by its own role; the default instance and the new
-- one cannot read each other's replies; repliers may send to it; ensure_instance is idempotent.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(39);

CREATE ROLE svc_singularity_t25 LOGIN;
SET LOCAL client_min_messages = warning;  -- pgmq's "trigger does not exist, skipping" notices
SET LOCAL ROLE own_shared_queue;
SELECT array_agg(q ORDER BY q)::text AS made FROM bus.ensure_instance('t25', 'svc_singularity_t25') AS q \gset
RESET ROLE;

SELECT is(:'made'::text[], ARRAY['approval_responses_t25', 'job_results_t25', 'knowledge_updates_t25', 'llm_results_t25',
                                 'question_responses_t25', 'template_updates_t25'],
          'ensure_instance creates the 6 reply/inbox queues <kind>_t25');
SELECT set_has($$SELECT queue_name FROM pgmq.list_queues()$$, format('SELECT unnest(%L::text[])', :'made'),
               'the new queues are real pgmq queues');
SELECT is_empty($$SELECT queue_name FROM bus.queues WHERE instance_id = 't25' AND kind <> regexp_replace(queue_name, '_t25$', '')$$,
                'each new queue is registered with its kind and instance');
SELECT is_empty(format($$SELECT q FROM unnest(%L::text[]) q
                   WHERE (SELECT count(*) FROM pg_trigger WHERE tgrelid = format('pgmq.%%I', 'q_' || q)::regclass
                            AND tgname IN ('bus_validate_message', 'bus_wake')) <> 2$$, :'made'),
                'each new queue has the validation and wake-up triggers');
SELECT is((SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'pgmq.q_llm_results_t25'::regclass), 'own_shared_queue',
          'the new queue tables belong to own_shared_queue');

-- Written out: who may send to / consume the new instance's queues (and the default's, across instances).
CREATE TEMP TABLE t_expect (q text, r name, op text, allowed boolean, msg jsonb) ON COMMIT DROP;
INSERT INTO t_expect VALUES
  ('llm_results_t25',        'svc_singularity_t25', 'read', true,  NULL),
  ('job_results_t25',        'svc_singularity_t25', 'read', true,  NULL),
  ('approval_responses_t25', 'svc_singularity_t25', 'read', true,  NULL),
  ('question_responses_t25', 'svc_singularity_t25', 'read', true,  NULL),
  ('template_updates_t25',   'svc_singularity_t25', 'read', true,  NULL),
  ('knowledge_updates_t25',  'svc_singularity_t25', 'read', true,  NULL),
  ('llm_results_t25',        'svc_singularity',     'read', false, NULL),
  ('job_results_t25',        'svc_singularity',     'read', false, NULL),
  ('template_updates_t25',   'svc_singularity',     'read', false, NULL),
  ('llm_results',            'svc_singularity_t25', 'read', false, NULL),
  ('job_results',            'svc_singularity_t25', 'read', false, NULL),
  ('knowledge_updates',      'svc_singularity_t25', 'read', false, NULL),
  ('llm_results_t25',        'svc_nexus',           'send', true,  '{"request_id": "r1", "result": "ok"}'),
  ('approval_responses_t25', 'svc_nexus',           'send', true,  '{"request_id": "r1", "approved": false, "decided_by": "bob"}'),
  ('question_responses_t25', 'svc_nexus',           'send', true,  '{"request_id": "r1", "response": "yes", "answered_by": "bob"}'),
  ('job_results_t25',        'svc_genesis',         'send', true,  '{"request_id": "r1", "exit_code": 0}'),
  ('template_updates_t25',   'svc_centralcloud',    'send', true,  '{"git_url": "https://example.invalid/t.git", "updated_files": []}'),
  ('knowledge_updates_t25',  'svc_centralcloud',    'send', true,  '{"type": "aggregated_patterns", "patterns": []}'),
  ('job_results_t25',        'svc_nexus',           'send', false, '{"request_id": "r1", "exit_code": 0}'),
  ('llm_results_t25',        'svc_singularity',     'send', false, '{"request_id": "r1", "result": "ok"}'),
  ('llm_results_t25',        'svc_singularity_t25', 'send', false, '{"request_id": "r1", "result": "ok"}'),
  ('llm_requests',           'svc_singularity_t25', 'send', true,
   '{"agent_id": "a1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}], "reply_to": "llm_results_t25"}'),
  ('job_requests',           'svc_singularity_t25', 'send', true,  '{"code": "1", "language": "python", "mode": "run", "reply_to": "job_results_t25"}'),
  ('pattern_messages',       'svc_singularity_t25', 'send', true,  '{"instance_id": "t25", "patterns": []}'),
  ('instance_heartbeat',     'svc_singularity_t25', 'send', true,  '{"instance_id": "t25", "service": "singularity", "at": "now"}'),
  ('llm_requests',           'svc_singularity_t25', 'read', false, NULL),
  ('template_updates_t25',   'svc_singularity_t25', 'send', false, '{"git_url": "x", "updated_files": []}');
SELECT CASE WHEN allowed
            THEN lives_ok(format('SET LOCAL ROLE %I; %s; RESET ROLE', r, stmt), format('%s may %s %s', r, op, q))
            ELSE throws_ok(format('SET LOCAL ROLE %I; %s; RESET ROLE', r, stmt), '42501', 'permission denied for table q_' || q,
                           format('%s may not %s %s (42501)', r, op, q))
       END
  FROM (SELECT *, CASE op WHEN 'send' THEN format('SELECT pgmq.send(%L, %L::jsonb)', q, msg)
                          ELSE format('SELECT * FROM pgmq.read(%L, 0, 1)', q) END AS stmt
          FROM t_expect ORDER BY op, q, r) x;

-- Validation knows the new queues: a reply_to naming the instance's result queue is accepted, others' kinds not.
SELECT lives_ok($$SELECT bus.validate_message('approval_requests',
                  '{"agent_id": "a", "file_path": "f", "diff": "d", "reply_to": "approval_responses_t25"}')$$,
                'reply_to approval_responses_t25 is a valid approval reply queue');
SELECT throws_ok($$SELECT bus.validate_message('approval_requests',
                   '{"agent_id": "a", "file_path": "f", "diff": "d", "reply_to": "llm_results_t25"}')$$, '22023',
                 'approval_requests: reply_to "llm_results_t25" is not a approval_responses queue',
                 'reply_to llm_results_t25 is not an approval reply queue');
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_llm_results_t25 WHERE message->>'source' = 'nexus' AND headers->>'sender' = 'svc_nexus'),
          'the reply nexus sent to llm_results_t25 is there, stamped with its source and sender');

-- Idempotent, and the role name is checked.
SET LOCAL ROLE own_shared_queue;
SELECT count(*) AS again FROM bus.ensure_instance('t25', 'svc_singularity_t25') \gset
RESET ROLE;
SELECT is(:again::int, 6, 'ensure_instance again returns the same 6 queues');
SELECT is((SELECT count(*)::int FROM bus.queues WHERE instance_id = 't25'), 6, 'and registers no duplicate');
SELECT is((SELECT count(*)::int FROM pg_trigger WHERE tgname = 'bus_wake' AND tgrelid::regclass::text LIKE 'pgmq.q\_%\_t25'), 6,
          'one wake-up trigger per new queue, not two');
SELECT throws_ok($$SELECT bus.ensure_instance('Bad-Id', 'svc_singularity_t25')$$, '23514', NULL,
                 'an instance id with upper case or dashes is refused (check constraint)');

SELECT * FROM finish();
ROLLBACK;
