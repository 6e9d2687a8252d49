-- shared_queue schema: the real pgmq extension, the bus schema, and every queue of the catalog
-- with its archive, its validation trigger and its wake-up trigger (one NOTIFY per insert statement).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(117);

-- pgmq is the real extension, at the version we pin.
SELECT has_extension('pgmq', 'pgmq is installed as an extension (pg_extension row)');
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'pgmq'), '1.13.0', 'pgmq extension version is 1.13.0');
SELECT is((SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgmq'), 'pgmq',
          'pgmq extension lives in schema pgmq');

-- Its functions with their real signatures (and return types), owned by the extension.
SELECT has_function('pgmq', 'send', ARRAY['text', 'jsonb'], 'pgmq.send(text, jsonb) exists');
SELECT has_function('pgmq', 'send', ARRAY['text', 'jsonb', 'integer'], 'pgmq.send(text, jsonb, integer delay) exists');
SELECT has_function('pgmq', 'send', ARRAY['text', 'jsonb', 'jsonb'], 'pgmq.send(text, jsonb, jsonb headers) exists');
SELECT has_function('pgmq', 'send', ARRAY['text', 'jsonb', 'jsonb', 'timestamp with time zone'],
                    'pgmq.send(text, jsonb, jsonb, timestamptz) exists');
SELECT function_returns('pgmq', 'send', ARRAY['text', 'jsonb'], 'setof bigint', 'pgmq.send returns setof bigint (msg ids)');
SELECT has_function('pgmq', 'read', ARRAY['text', 'integer', 'integer', 'jsonb'],
                    'pgmq.read(text, vt integer, qty integer, conditional jsonb) exists');
SELECT function_returns('pgmq', 'read', ARRAY['text', 'integer', 'integer', 'jsonb'], 'setof pgmq.message_record',
                        'pgmq.read returns setof pgmq.message_record');
SELECT has_function('pgmq', 'archive', ARRAY['text', 'bigint'], 'pgmq.archive(text, bigint) exists');
SELECT function_returns('pgmq', 'archive', ARRAY['text', 'bigint'], 'boolean', 'pgmq.archive(text, bigint) returns boolean');
SELECT has_function('pgmq', 'archive', ARRAY['text', 'bigint[]'], 'pgmq.archive(text, bigint[]) exists');
SELECT has_function('pgmq', 'metrics', ARRAY['text'], 'pgmq.metrics(text) exists');
SELECT function_returns('pgmq', 'metrics', ARRAY['text'], 'pgmq.metrics_result', 'pgmq.metrics returns pgmq.metrics_result');
SELECT has_function('pgmq', 'list_queues', ARRAY[]::text[], 'pgmq.list_queues() exists');
SELECT function_returns('pgmq', 'list_queues', ARRAY[]::text[], 'setof pgmq.queue_record',
                        'pgmq.list_queues returns setof pgmq.queue_record');
SELECT is(
    (SELECT count(*)::int FROM pg_depend d
      WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
        AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgmq')
        AND d.objid IN ('pgmq.send(text,jsonb)'::regprocedure, 'pgmq.read(text,integer,integer,jsonb)'::regprocedure,
                        'pgmq.archive(text,bigint)'::regprocedure, 'pgmq.metrics(text)'::regprocedure,
                        'pgmq.list_queues()'::regprocedure)),
    5, 'pgmq.send/read/archive/metrics/list_queues are members of the pgmq extension, not look-alikes');

-- The bus schema: tables, views, functions.
SELECT has_schema('bus', 'schema bus exists');
SELECT has_table('bus', t, format('table bus.%s exists', t))
  FROM unnest(ARRAY['settings', 'queue_kinds', 'message_fields', 'instances', 'queues', 'flows', 'prune_log']) AS t;
SELECT has_view('bus', v, format('view bus.%s exists', v))
  FROM unnest(ARRAY['archived_messages', 'archive_daily', 'approval_rates', 'questions_per_agent']) AS v;
SELECT has_function('bus', f, a, format('function bus.%s(%s) exists', f, array_to_string(a, ', ')))
  FROM (VALUES
    ('validate_message', ARRAY['text', 'jsonb']),
    ('message_rules',    ARRAY[]::text[]),
    ('ack',              ARRAY['text', 'bigint', 'integer']),
    ('ack',              ARRAY['text', 'bigint[]', 'integer[]']),
    ('set_lease',        ARRAY['text', 'bigint', 'integer', 'double precision']),
    ('fail',             ARRAY['text', 'bigint', 'integer', 'text', 'integer', 'double precision']),
    ('dead_letter',      ARRAY['text', 'bigint', 'integer', 'text']),
    ('queue_overview',   ARRAY[]::text[]),
    ('dlq_replay',       ARRAY['bigint']),
    ('dlq_purge',        ARRAY['text']),
    ('peek',             ARRAY['text', 'boolean', 'integer']),
    ('ensure_queue',     ARRAY['text', 'text', 'text']),
    ('ensure_instance',  ARRAY['text', 'name']),
    ('apply_grants',     ARRAY['text']),
    ('configure',        ARRAY['integer', 'integer']),
    ('setting',          ARRAY['text']),
    ('prune_archives',   ARRAY['integer', 'integer'])
  ) AS f(f, a);
SELECT is((SELECT prokind::text FROM pg_proc WHERE oid = 'bus.prune_archives(integer,integer)'::regprocedure), 'p',
          'bus.prune_archives is a procedure (it commits per batch)');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'bus.prune_archives(integer,integer)'::regprocedure), NULL,
          'bus.prune_archives has no SET clause (a procedure with one cannot COMMIT)');
SELECT has_function('ops', 'ulid', ARRAY['timestamp with time zone'], 'ops.ulid(timestamptz) exists');

-- The catalog: 8 shared queues, 6 reply/inbox queues of the default instance (14 in all).
SELECT is((SELECT role::text FROM bus.instances WHERE instance_id = 'default'), 'svc_singularity',
          'the default instance is svc_singularity');
SELECT set_eq($$SELECT queue_name FROM bus.queues WHERE instance_id IS NULL$$,
              ARRAY['llm_requests', 'approval_requests', 'question_requests', 'job_requests', 'pattern_messages',
                    'learned_patterns', 'instance_heartbeat', 'dead_letters'],
              'the 8 shared queues (requests, events, dead letters) are registered');
SELECT set_eq($$SELECT queue_name FROM bus.queues WHERE instance_id = 'default'$$,
              ARRAY['llm_results', 'approval_responses', 'question_responses', 'job_results', 'template_updates',
                    'knowledge_updates'],
              'the 6 reply/inbox queues of the default instance are registered under their base names');
SELECT set_has($$SELECT queue_name FROM pgmq.list_queues()$$, $$SELECT queue_name FROM bus.queues$$,
               'every queue of bus.queues exists in pgmq.list_queues()');
SELECT is_empty($$SELECT queue_name FROM pgmq.list_queues() l JOIN pgmq.meta m USING (queue_name)
                  JOIN bus.queues q USING (queue_name) JOIN bus.queue_kinds k ON k.kind = q.kind
                  WHERE l.is_unlogged OR (l.is_partitioned AND k.partition_interval IS NULL)$$,
                'no bus queue is unlogged (a crash loses nothing), nor partitioned unless its kind says so');

-- Per queue: live table, archive table, validation trigger, notify trigger (14 x 4).
CREATE TEMP TABLE t_queues (q text) ON COMMIT DROP;
INSERT INTO t_queues VALUES ('llm_requests'), ('approval_requests'), ('question_requests'), ('job_requests'),
    ('pattern_messages'), ('learned_patterns'), ('instance_heartbeat'), ('dead_letters'), ('llm_results'),
    ('approval_responses'), ('question_responses'), ('job_results'), ('template_updates'), ('knowledge_updates');
SELECT has_table('pgmq', 'q_' || q, format('queue table pgmq.q_%s exists', q)) FROM t_queues ORDER BY q;
SELECT has_table('pgmq', 'a_' || q, format('archive table pgmq.a_%s exists', q)) FROM t_queues ORDER BY q;
SELECT trigger_is('pgmq', 'q_' || q, 'bus_validate_message', 'bus', '_check_message',
                  format('q_%s validates every insert through bus._check_message()', q))
  FROM t_queues ORDER BY q;
SELECT trigger_is('pgmq', 'q_' || q, 'bus_wake', 'bus', '_wake',
                  format('q_%s wakes its listeners once per insert statement (bus._wake)', q))
  FROM t_queues ORDER BY q;

-- Every managed queue (also other instances') has both triggers, and the throttle we configured.
SELECT is_empty($$SELECT b.queue_name FROM bus.queues b
                   WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = format('pgmq.%I', 'q_' || b.queue_name)::regclass
                                        AND t.tgname = 'bus_validate_message' AND t.tgenabled = 'O')$$,
                'every queue in bus.queues has an enabled validation trigger');
SELECT isnt(bus.setting('notify_throttle_ms'), NULL, 'bus.setting(''notify_throttle_ms'') is set by migrate');
SELECT is_empty($$SELECT b.queue_name FROM bus.queues b
                   WHERE bus.setting('notify_throttle_ms')::int = 0
                     AND (NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = format('pgmq.%I', 'q_' || b.queue_name)::regclass
                                        AND t.tgname = 'bus_wake' AND t.tgenabled = 'O')
                          OR EXISTS (SELECT 1 FROM pgmq.notify_insert_throttle t WHERE t.queue_name = b.queue_name))$$,
                'with throttle 0 every queue has the statement wake-up and not pgmq''s per-message trigger');
SELECT isnt(bus.setting('retention_days'), NULL, 'bus.setting(''retention_days'') is set by migrate');

-- Every message kind has rules, the type rule lists allowed values, requests name their result kind.
SELECT is_empty($$SELECT kind FROM bus.queue_kinds k
                   WHERE NOT EXISTS (SELECT 1 FROM bus.message_fields f
                                      WHERE f.kind = k.kind AND f.field = 'type' AND f.required AND f.allowed IS NOT NULL)$$,
                'every queue kind has a required "type" rule with its allowed values');
SELECT is_empty($$SELECT kind FROM bus.queue_kinds WHERE role = 'request' AND result_kind IS NULL$$,
                'every request kind names the result kind that answers it');

SELECT * FROM finish();
ROLLBACK;
