-- depends: 0005_ledger_scope
-- centralcloud.settings read_vt_s (the lease on a read batch) was seeded by the first procedures
-- (9ecd733) and has been read by nothing since the lease-free batch read (292457d); the procedures stopped
-- seeding it, but a database installed before kept it: listed among the settings, doing nothing.
-- Found by tests/py/test_schema_drift.py.
DELETE FROM centralcloud.settings WHERE key = 'read_vt_s';
