-- Privileges: the full matrix role x queue x operation (send, read, archive, purge, drop, create),
-- written out from the flow table of DESIGN.md section 5, each operation really attempted as the
-- role (SET LOCAL ROLE ... RESET ROLE): allowed ones live, forbidden ones raise 42501.
-- Then CentralCloud's read-only archive access, and the operator functions no service may call.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(473);

-- Expectations, written out (not computed from bus.flows): who may send, who may consume (read+archive).
CREATE TEMP TABLE t_expect (q text PRIMARY KEY, senders name[], consumers name[], msg jsonb) ON COMMIT DROP;
INSERT INTO t_expect VALUES
 ('llm_requests',       '{svc_singularity}', '{svc_nexus}',
  '{"agent_id": "a1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}'),
 ('llm_results',        '{svc_nexus}',       '{svc_singularity}', '{"request_id": "r1", "result": "ok"}'),
 ('approval_requests',  '{svc_singularity}', '{svc_nexus}',       '{"agent_id": "a1", "file_path": "x.py", "diff": "+1"}'),
 ('approval_responses', '{svc_nexus}',       '{svc_singularity}', '{"request_id": "r1", "approved": true, "decided_by": "alice"}'),
 ('question_requests',  '{svc_singularity}', '{svc_nexus}',       '{"agent_id": "a1", "question": "why?"}'),
 ('question_responses', '{svc_nexus}',       '{svc_singularity}', '{"request_id": "r1", "response": "so", "answered_by": "alice"}'),
 ('job_requests',       '{svc_singularity}', '{svc_genesis}',     '{"code": "print(1)", "language": "python", "mode": "run"}'),
 ('job_results',        '{svc_genesis}',     '{svc_singularity}', '{"request_id": "r1", "output": "1", "exit_code": 0}'),
 ('pattern_messages',   '{svc_singularity}', '{svc_centralcloud}', '{"instance_id": "default", "patterns": []}'),
 ('learned_patterns',   '{svc_singularity}', '{svc_centralcloud}', '{"instance_id": "default", "artifacts": []}'),
 ('knowledge_updates',  '{svc_centralcloud}', '{svc_singularity}', '{"type": "aggregated_patterns", "patterns": []}'),
 ('template_updates',   '{svc_centralcloud}', '{svc_singularity}', '{"git_url": "https://example.invalid/t.git", "updated_files": ["a"]}'),
 ('instance_heartbeat', '{svc_singularity,svc_genesis,svc_nexus,svc_centralcloud}', '{svc_centralcloud}',
  '{"instance_id": "default", "at": "2026-01-01T00:00:00Z"}'),
 -- dead letters are written only by the consumers' failure path (bus._bury, as the bus owner)
 ('dead_letters',       '{}', '{}',
  '{"queue": "llm_requests", "message": {}, "error": "boom", "attempts": 1}');
CREATE TEMP TABLE t_roles (r name PRIMARY KEY) ON COMMIT DROP;
INSERT INTO t_roles VALUES ('svc_singularity'), ('svc_genesis'), ('svc_nexus'), ('svc_centralcloud');

-- The written-out table agrees with bus.flows (as the bus maps services to roles) and with the
-- privileges actually granted on the tables.
SELECT set_eq($$SELECT q, s, 'send' FROM t_expect, unnest(senders) s
                UNION ALL SELECT q, c, 'consume' FROM t_expect, unnest(consumers) c$$,
              $$SELECT b.queue_name, r, f.action FROM bus.queues b JOIN bus.flows f ON f.kind = b.kind,
                       bus._service_roles(f.service, b) r
                 WHERE (b.instance_id IS NULL OR b.instance_id = 'default') AND r IN (SELECT r FROM t_roles)$$,
              'the expectation table matches bus.flows for the shared and default-instance queues');
SELECT set_eq($$SELECT q, s FROM t_expect, unnest(senders) s$$,
              $$SELECT q, r FROM t_expect, t_roles WHERE has_table_privilege(r, format('pgmq.%I', 'q_' || q), 'INSERT')$$,
              'INSERT on the queue tables is granted to exactly the senders');
SELECT set_eq($$SELECT q, c FROM t_expect, unnest(consumers) c$$,
              $$SELECT q, r FROM t_expect, t_roles WHERE has_column_privilege(r, format('pgmq.%I', 'q_' || q), 'vt', 'UPDATE')
                                                       AND has_table_privilege(r, format('pgmq.%I', 'q_' || q), 'DELETE')$$,
              'UPDATE (of vt) and DELETE on the queue tables are granted to exactly the consumers');
SELECT is_empty($$SELECT q, r FROM t_expect, t_roles
                   WHERE has_table_privilege(r, format('pgmq.%I', 'q_' || q), 'TRUNCATE')
                      OR has_table_privilege(r, format('pgmq.%I', 'a_' || q), 'UPDATE')
                      OR has_table_privilege(r, format('pgmq.%I', 'a_' || q), 'DELETE')
                      OR has_table_privilege(r, format('pgmq.%I', 'a_' || q), 'TRUNCATE')$$,
                'no service role may TRUNCATE a queue or UPDATE/DELETE/TRUNCATE an archive');
SELECT is_empty($$SELECT q FROM t_expect WHERE has_table_privilege('public', format('pgmq.%I', 'q_' || q), 'SELECT')
                                            OR has_table_privilege('public', format('pgmq.%I', 'a_' || q), 'SELECT')$$,
                'PUBLIC has no privilege on any queue or archive table');

-- One message per queue, sent by the superuser, for the archive operations below.
ALTER TABLE t_expect ADD COLUMN msg_id bigint;
-- (the superuser names the heartbeat's service and instance; a service role's are stamped from its role)
UPDATE t_expect SET msg_id = (SELECT pgmq.send(q, msg || CASE WHEN q = 'instance_heartbeat'
                                                             THEN '{"service": "nexus"}'::jsonb
                                                             ELSE '{}'::jsonb END));

-- The matrix: 4 roles x 14 queues x 6 operations = 336 real attempts.
SELECT CASE WHEN allowed
            THEN lives_ok(format('SET LOCAL ROLE %I; %s; RESET ROLE', r, stmt),
                          format('%s may %s %s', r, op, q))
            ELSE throws_ok(format('SET LOCAL ROLE %I; %s; RESET ROLE', r, stmt), '42501',
                           CASE op WHEN 'archive' THEN 'permission denied for table a_' || q
                                   WHEN 'drop'    THEN 'permission denied for function drop_queue'
                                   WHEN 'create'  THEN 'permission denied for schema pgmq'
                                   ELSE 'permission denied for table q_' || q END,
                           format('%s may not %s %s (42501)', r, op, q))
       END
  FROM (SELECT t_roles.r, e.q, o.op, o.n,
               CASE o.op WHEN 'send' THEN r = ANY (e.senders)
                         WHEN 'read' THEN r = ANY (e.consumers)
                         WHEN 'archive' THEN r = ANY (e.consumers)
                         ELSE false END AS allowed,
               CASE o.op WHEN 'send'    THEN format('SELECT pgmq.send(%L, %L::jsonb)', e.q, e.msg)
                         WHEN 'read'    THEN format('SELECT * FROM pgmq.read(%L, 0, 1)', e.q)
                         WHEN 'archive' THEN format('SELECT pgmq.archive(%L, %s::bigint)', e.q, e.msg_id)
                         WHEN 'purge'   THEN format('SELECT pgmq.purge_queue(%L)', e.q)
                         WHEN 'drop'    THEN format('SELECT pgmq.drop_queue(%L)', e.q)
                         WHEN 'create'  THEN format('SELECT pgmq.create(%L)', e.q)
               END AS stmt
          FROM t_roles, t_expect e,
               (VALUES (1, 'send'), (2, 'read'), (3, 'archive'), (4, 'purge'), (5, 'drop'), (6, 'create')) AS o(n, op)
         ORDER BY t_roles.r, e.q, o.n) m;

-- The allowed operations really happened: each queue with a consumer had its message archived.
SELECT is_empty($$SELECT q FROM t_expect e WHERE cardinality(consumers) > 0 AND NOT EXISTS (
                    SELECT 1 FROM bus.archived_messages a WHERE a.queue_name = e.q AND a.msg_id = e.msg_id)$$,
                'every consumed queue''s message was archived by its consumer');
SELECT ok(EXISTS (SELECT 1 FROM pgmq.q_dead_letters WHERE msg_id = (SELECT msg_id FROM t_expect WHERE q = 'dead_letters')),
          'nobody could archive the dead letter (dead_letters has no consumer role)');
SELECT is((SELECT count(*)::int FROM pgmq.list_queues()), (SELECT count(*)::int FROM pgmq.meta),
          'no queue was dropped or half-created by the attempts');
SELECT throws_ok(format('SET LOCAL ROLE %I; SELECT pgmq.create(%L); RESET ROLE', r, 'zz_made_by_' || replace(r, 'svc_', '')),
                 '42501', NULL, format('%s may not create a new queue (42501)', r))
  FROM t_roles ORDER BY r;
SELECT throws_ok(format('SET LOCAL ROLE %I; SELECT pgmq.create_unlogged(%L); RESET ROLE', r, 'zz_unlogged'),
                 '42501', NULL, format('%s may not create an unlogged queue (42501)', r))
  FROM t_roles ORDER BY r;

-- Nor any other pgmq administration: notify settings, topics, indexes, partitioning.
SELECT throws_ok(format('SET LOCAL ROLE %I; %s; RESET ROLE', r, stmt), '42501', NULL,
                 format('%s may not %s (42501)', r, what))
  FROM t_roles, (VALUES
      ('disable insert notifications', 'SELECT pgmq.disable_notify_insert(''llm_requests'')'),
      ('re-enable insert notifications', 'SELECT pgmq.enable_notify_insert(''llm_requests'', 5000)'),
      ('change the notify throttle', 'SELECT pgmq.update_notify_insert(''llm_requests'', 5000)'),
      ('set throttle_interval_ms directly', 'UPDATE pgmq.notify_insert_throttle SET throttle_interval_ms = 5000'),
      ('bind a topic to a queue', 'SELECT pgmq.bind_topic(''x.*'', ''llm_requests'')'),
      ('create a FIFO index', 'SELECT pgmq.create_fifo_index(''llm_requests'')'),
      ('convert an archive to partitions', 'SELECT pgmq.convert_archive_partitioned(''llm_requests'')'),
      ('create a partitioned queue', 'SELECT pgmq.create_partitioned(''zz_partitioned'')')
  ) AS a(what, stmt)
 ORDER BY r, what;
SELECT lives_ok(format('SET LOCAL ROLE %I; UPDATE pgmq.notify_insert_throttle SET last_notified_at = last_notified_at WHERE false; RESET ROLE', r),
                format('%s may stamp last_notified_at (the notify trigger needs it)', r))
  FROM t_roles ORDER BY r;

-- CentralCloud reads every archive and the analytics views, and only reads them.
SELECT ok(has_table_privilege('svc_centralcloud', format('pgmq.%I', 'a_' || q), 'SELECT'),
          format('svc_centralcloud may SELECT archive pgmq.a_%s', q))
  FROM t_expect ORDER BY q;
SELECT lives_ok(format('SET LOCAL ROLE svc_centralcloud; SELECT count(*) FROM bus.%I; RESET ROLE', v),
                format('svc_centralcloud may SELECT bus.%s', v))
  FROM unnest(ARRAY['archived_messages', 'archive_daily', 'approval_rates', 'questions_per_agent']) AS v;
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; DELETE FROM pgmq.a_llm_requests; RESET ROLE$$, '42501',
                 'permission denied for table a_llm_requests', 'svc_centralcloud may not DELETE from an archive');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; INSERT INTO pgmq.a_llm_requests (msg_id, vt, message) VALUES (-1, now(), '{}'); RESET ROLE$$,
                 '42501', 'permission denied for table a_llm_requests',
                 'svc_centralcloud may not INSERT into the archive of a queue it does not consume');
SELECT throws_ok(format('SET LOCAL ROLE %I; SELECT count(*) FROM bus.archived_messages; RESET ROLE', r), '42501',
                 'permission denied for view archived_messages', format('%s may not read bus.archived_messages', r))
  FROM t_roles WHERE r <> 'svc_centralcloud' ORDER BY r;

-- Operator functions are refused to every service role (42501).
SELECT throws_ok(format('SET LOCAL ROLE %I; %s; RESET ROLE', r, stmt), '42501', NULL,
                 format('%s may not call %s (42501)', r, fn))
  FROM t_roles, (VALUES
      ('bus.queue_overview',  'SELECT * FROM bus.queue_overview()'),
      ('bus.dlq_replay',      'SELECT bus.dlq_replay(1)'),
      ('bus.dlq_purge',       'SELECT bus.dlq_purge()'),
      ('bus.peek',            'SELECT * FROM bus.peek(''llm_requests'')'),
      ('bus.configure',       'SELECT bus.configure(1, 0)'),
      ('bus.ensure_queue',    'SELECT bus.ensure_queue(''zz_by_service'', ''llm_requests'')'),
      ('bus.ensure_instance', 'SELECT bus.ensure_instance(''evil'', ''svc_genesis'')'),
      ('bus.apply_grants',    'SELECT bus.apply_grants(''llm_requests'')'),
      ('bus.set_setting',     'SELECT bus.set_setting(''retention_days'', ''1'')'),
      ('bus.prune_archives',  'CALL bus.prune_archives()'),
      ('bus.forget_instance', 'SELECT * FROM bus.forget_instance(''t20'')')
  ) AS f(fn, stmt)
 ORDER BY r, fn;
-- Nor may a service rewrite the catalog to grant itself a flow or loosen a rule.
SELECT throws_ok(format('SET LOCAL ROLE %I; INSERT INTO bus.flows VALUES (%L, %L, %L); RESET ROLE',
                        r, 'llm_requests', replace(r, 'svc_', ''), 'consume'),
                 '42501', 'permission denied for table flows', format('%s may not insert into bus.flows', r))
  FROM t_roles ORDER BY r;
SELECT throws_ok(format('SET LOCAL ROLE %I; UPDATE bus.message_fields SET required = false; RESET ROLE', r),
                 '42501', 'permission denied for table message_fields', format('%s may not change bus.message_fields', r))
  FROM t_roles ORDER BY r;
SELECT throws_ok(format('SET LOCAL ROLE %I; DELETE FROM pgmq.meta; RESET ROLE', r),
                 '42501', 'permission denied for table meta', format('%s may not delete from pgmq.meta', r))
  FROM t_roles ORDER BY r;
SELECT is_empty($$SELECT r, s FROM t_roles, unnest(ARRAY['pgmq', 'bus', 'ops', 'public']) s
                   WHERE has_schema_privilege(r, s, 'CREATE')$$,
                'no service role may create objects in schemas pgmq, bus, ops or public');
-- The fenced consume functions run with the caller's rights: a non-consumer is refused.
SELECT throws_ok(format('SET LOCAL ROLE svc_genesis; SELECT bus.%s; RESET ROLE', stmt), '42501', NULL,
                 format('svc_genesis may not bus.%s on llm_requests (not its queue)', split_part(stmt, '(', 1)))
  FROM unnest(ARRAY['ack(''llm_requests'', 1::bigint, 1)', 'ack(''llm_requests'', ARRAY[1]::bigint[], ARRAY[1])',
                    'fail(''llm_requests'', 1, 1, ''x'')', 'set_lease(''llm_requests'', 1, 1, 5)',
                    'dead_letter(''llm_requests'', 1, 1, ''x'')']) AS stmt;

SELECT * FROM finish();
ROLLBACK;
