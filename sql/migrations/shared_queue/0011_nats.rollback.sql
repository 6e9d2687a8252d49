-- The bridges' queues and registrations go first: without the `bridge` flag, migrate would take them for
-- Singularity instances and create databases for them.
SELECT bus.forget_instance(instance_id) FROM bus.instances WHERE bridge;
DROP SCHEMA IF EXISTS nats CASCADE;
ALTER TABLE bus.instances DROP COLUMN IF EXISTS bridge;
