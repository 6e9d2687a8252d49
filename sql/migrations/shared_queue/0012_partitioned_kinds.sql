-- depends: 0009_cold_storage
-- Partitioned queues, chosen per queue kind: a kind with a partition_interval gets its queues created by
-- pgmq.create_partitioned (pg_partman, by enqueued_at / archived_at), and retention drops whole archive
-- partitions once every day in them is exported to cold storage and verified (bus.prune_partitions).
-- Queues that exist keep their layout (pgmq cannot convert one); the choice applies when one is created.
ALTER TABLE bus.queue_kinds ADD COLUMN partition_interval text
    CHECK (partition_interval IS NULL OR partition_interval IN ('1 day', '1 week'));
COMMENT ON COLUMN bus.queue_kinds.partition_interval IS
    'NULL: plain pgmq queues; ''1 day'' or ''1 week'': pgmq.create_partitioned, whole UTC days per partition (the operator''s choice)';
