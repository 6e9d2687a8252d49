-- Superuser part of shared_queue: pgmq itself is installed by migrate (extension or SQL-only),
-- then its owner role gets what it needs to create queues and to hand out per-queue privileges.
CREATE SCHEMA IF NOT EXISTS partman;
CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
GRANT USAGE, CREATE ON SCHEMA pgmq TO own_shared_queue;
GRANT USAGE ON SCHEMA pgmq TO own_shared_queue WITH GRANT OPTION;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgmq.meta, pgmq.notify_insert_throttle, pgmq.topic_bindings
    TO own_shared_queue;
GRANT SELECT ON pgmq.meta, pgmq.notify_insert_throttle TO own_shared_queue WITH GRANT OPTION;
GRANT UPDATE (last_notified_at) ON pgmq.notify_insert_throttle TO own_shared_queue WITH GRANT OPTION;
-- No service role may create queues or touch pgmq's bookkeeping beyond the notify throttle stamp.
REVOKE CREATE ON SCHEMA pgmq FROM PUBLIC;
-- pgmq.drop_queue and pgmq.enable_notify_insert look the table up in information_schema, which
-- hides tables a role has no privilege on: a service role got `false` (drop) or "queue does not
-- exist" (P0001) instead of a permission error. These are the owner's: 42501 for everyone else.
REVOKE EXECUTE ON FUNCTION pgmq.drop_queue(text), pgmq.drop_queue(text, boolean),
    pgmq.enable_notify_insert(text, integer), pgmq.disable_notify_insert(text),
    pgmq.update_notify_insert(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgmq.drop_queue(text), pgmq.drop_queue(text, boolean),
    pgmq.enable_notify_insert(text, integer), pgmq.disable_notify_insert(text),
    pgmq.update_notify_insert(text, integer) TO own_shared_queue;
-- pg_partman's three SECURITY DEFINER checks (superuser-owned, pinned by pg_partman, IMMUTABLE checks
-- of their arguments) are the owner's, who would partition queues: not PUBLIC's.
REVOKE EXECUTE ON FUNCTION partman.check_epoch_type(text), partman.check_partition_type(text),
    partman.check_name_length(text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION partman.check_epoch_type(text), partman.check_partition_type(text),
    partman.check_name_length(text, text, boolean) TO own_shared_queue;
-- Partitioned queues (bus.queue_kinds.partition_interval, pgmq.create_partitioned): the owner runs
-- pg_partman for its own tables, as pg_partman's docs set up a non-superuser partman role. Its
-- maintenance runs as the owner too (shared_queue:partman_maintenance), so every partition is the owner's.
-- CREATE in schema partman (pg_partman's template tables) is granted only while migrate applies the
-- procedures (orchestrator/infra/migrate.py): superuser-owned definers live there (99_definers.sql).
GRANT USAGE ON SCHEMA partman TO own_shared_queue;
REVOKE CREATE ON SCHEMA partman FROM own_shared_queue;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA partman TO own_shared_queue;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA partman TO own_shared_queue;
GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA partman TO own_shared_queue;
