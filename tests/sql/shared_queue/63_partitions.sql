-- Partitioned queues: the choice per kind, and who may drop archive partitions (behaviour with real
-- partitions and COMMITs is in tests/py/test_partitioned_queues.py).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);

SELECT has_column('bus', 'queue_kinds', 'partition_interval', 'bus.queue_kinds.partition_interval chooses partitioning per kind');
SELECT is((SELECT count(*)::int FROM bus.queue_kinds WHERE partition_interval IS NOT NULL), 0,
          'no kind is partitioned unless the operator says so');
SELECT throws_ok($$UPDATE bus.queue_kinds SET partition_interval = '10000' WHERE kind = 'instance_heartbeat'$$, '23514', NULL,
                 'only whole days or weeks (cold storage''s days): a msg_id interval is refused');
SELECT lives_ok($$UPDATE bus.queue_kinds SET partition_interval = '1 week' WHERE kind = 'instance_heartbeat'$$,
                '''1 week'' is accepted');
SELECT has_function('bus', 'prune_partitions', ARRAY[]::text[], 'bus.prune_partitions() exists');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; SELECT bus.prune_partitions()$$, '42501', NULL,
                 'svc_centralcloud may not drop archive partitions');
SELECT ok(EXISTS (SELECT 1 FROM ops.cron_jobs WHERE jobname = 'partman_maintenance' AND run_as = 'own_shared_queue'),
          'pg_partman''s maintenance (premaking partitions) is scheduled, as the owner');

SELECT * FROM finish();
ROLLBACK;
