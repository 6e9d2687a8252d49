-- depends: 0003_trust
-- 0001_bus_catalog was edited after it reached the mainline: 44d9c71 widened bus.queue_kinds.role with
-- 'inbox'. A shared_queue installed before that kept the narrow CHECK, and every later migrate failed in
-- the catalog procedures (10_catalog.sql inserts the inbox kinds). Found by tests/py/test_schema_drift.py.
-- The same constraint under the same name for every database, so a fresh install ends where it was.
ALTER TABLE bus.queue_kinds DROP CONSTRAINT IF EXISTS queue_kinds_role_check;
ALTER TABLE bus.queue_kinds ADD CONSTRAINT queue_kinds_role_check
    CHECK (role IN ('request', 'result', 'inbox', 'event', 'dead_letter'));
