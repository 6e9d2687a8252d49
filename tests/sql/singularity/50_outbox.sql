-- Outbox: bad messages refused; a drain with shared_queue unreachable keeps every row and records
-- why; a message the bus refuses is retried, counted and finally marked dead, never lost.
-- (Delivery itself commits in shared_queue, outside this transaction: tests/py/test_singularity.py,
-- test_drain_as_pg_cron_runs_it_delivers_exactly_once and test_pg_cron_itself_runs_the_drain.)
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(18);
SELECT pg_advisory_xact_lock(hashtext('outbox.drain'));  -- pg_cron's drain skips while we hold it
TRUNCATE outbox.messages, outbox.drain_runs;

SELECT throws_ok($$SELECT outbox.enqueue('pattern_messages', '"text"')$$, '22023', NULL, 'enqueue: a non-object is refused');
SELECT throws_ok($$SELECT outbox.enqueue('pattern_messages', NULL)$$, '22023', NULL, 'enqueue: NULL is refused');
SELECT outbox.enqueue('instance_heartbeat', '{"type": "heartbeat", "instance_id": "default", "service": "singularity", "at": "2026-01-01T00:00:00Z"}') AS good \gset
SELECT ok(ops.is_ulid(:'good'), 'enqueue: returns the message id, a ULID');

-- shared_queue down (the foreign server points at a closed port, inside this transaction only)
SELECT option_value AS port FROM pg_options_to_table((SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'bus'))
 WHERE option_name = 'port' \gset
ALTER SERVER bus OPTIONS (SET port '1');
SELECT outbox.drain() AS r1 \gset
SELECT is((:'r1'::jsonb)->>'sent', '0', 'down: nothing sent');
SELECT matches((:'r1'::jsonb)->>'error', '^cannot reach shared_queue', 'down: the drain says why');
SELECT results_eq($$SELECT attempts, last_error IS NOT NULL FROM outbox.messages$$, $$VALUES (1, true)$$,
                  'down: the row stays, with attempts and last_error');
SELECT is((SELECT error IS NOT NULL FROM outbox.drain_runs ORDER BY id DESC LIMIT 1), true, 'down: drain_runs records the failure');
SELECT matches(core.run_job('drain_outbox'), '^failed: cannot reach shared_queue', 'down: run_job reports failed');
SELECT is((SELECT status FROM core.job_runs WHERE job = 'drain_outbox' ORDER BY id DESC LIMIT 1), 'failed', 'down: job_runs says failed');
ALTER SERVER bus OPTIONS (SET port :'port');
DELETE FROM outbox.messages;

-- refused by the bus: retried message by message, dead after the attempts limit
SELECT outbox.enqueue('pattern_messages', '{"type": "pattern_detection", "patterns": "none"}') AS bad \gset
SELECT outbox.drain(500, 100000, 3) AS r2 \gset
SELECT is((:'r2'::jsonb)->>'failed', '1', 'refused: counted as failed');
SELECT matches((SELECT last_error FROM outbox.messages WHERE id = :'bad'), 'field "patterns" must be a JSON array',
               'refused: the bus''s reason is kept on the row');
SELECT outbox.drain(500, 100000, 3) AS r3 \gset
SELECT outbox.drain(500, 100000, 3) AS r4 \gset
SELECT results_eq($$SELECT attempts, dead FROM outbox.messages WHERE id = '$$ || :'bad' || $$'$$, $$VALUES (3, true)$$,
                  'refused: dead after 3 attempts, still in the outbox');
SELECT is((outbox.drain(500, 100000, 3))->>'failed', '0', 'refused: a dead message is no longer retried');
SELECT matches((SELECT value FROM core.queue_status() WHERE item = 'outbox pattern_messages'), '^0 waiting, 1 dead',
            'queue_status shows the dead message');

-- The bus envelope of an outbox row: id, source, and created_at = when the business transaction wrote it.
SELECT is(outbox._envelope('{"type": "x"}', '01JID', '2030-01-02 03:04:05.123456+00', 'singularity:default'),
          '{"type": "x", "id": "01JID", "source": "singularity:default", "created_at": "2030-01-02T03:04:05.123456Z"}'::jsonb,
          '_envelope adds id, source and the business time');
SELECT is(outbox._envelope('{"source": "agent:a1", "created_at": "2029-01-01T00:00:00Z"}', '01JID', now(), 's'),
          '{"id": "01JID", "source": "agent:a1", "created_at": "2029-01-01T00:00:00Z"}'::jsonb,
          '_envelope keeps a source and created_at the message already has');
SELECT has_pk('outbox', 'inbox_acks', 'outbox.inbox_acks is keyed by (queue, msg_id)');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; DELETE FROM outbox.inbox_acks; RESET ROLE$$, '42501', NULL,
                 'svc_singularity may not touch the pending inbox acks (only consume_inbox does)');

SELECT * FROM finish();
ROLLBACK;
