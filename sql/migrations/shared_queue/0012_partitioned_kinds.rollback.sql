ALTER TABLE bus.queue_kinds DROP COLUMN IF EXISTS partition_interval;
