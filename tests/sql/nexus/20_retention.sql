-- Releasing budget reservations: a reservation is the budget held by a request in flight, so
-- nexus.release_stale_reservations refuses an age under the minimum in ops.settings
-- (release_reservations_min_age, 30 minutes by default), which only the owner can change.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);

DELETE FROM nexus.reservations;
INSERT INTO nexus.budget_usage (agent_id, day, tokens, cost) VALUES ('ret-ag', (now() AT TIME ZONE 'UTC')::date, 300, 0)
ON CONFLICT (agent_id, day) DO UPDATE SET tokens = 300;
INSERT INTO nexus.reservations (request_id, agent_id, day, tokens, cost, created_at) VALUES
    ('ret-fresh', 'ret-ag', (now() AT TIME ZONE 'UTC')::date, 100, 0, now() - interval '1 minute'),
    ('ret-stale', 'ret-ag', (now() AT TIME ZONE 'UTC')::date, 200, 0, now() - interval '2 hours');

SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.release_stale_reservations('0'); RESET ROLE$$, '22023',
                 'nexus.release_stale_reservations: 00:00:00 is below the minimum of 00:30:00 (ops.settings release_reservations_min_age)',
                 'svc_nexus: release_stale_reservations(0) is refused');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.release_stale_reservations(NULL); RESET ROLE$$, '22023', NULL,
                 'svc_nexus: release_stale_reservations(NULL) is refused');
SELECT is((SELECT count(*)::int FROM nexus.reservations WHERE request_id = 'ret-fresh'), 1,
          'the reservation of a request in flight stays');
SELECT is((SELECT value FROM ops.settings WHERE key = 'release_reservations_min_age'), '30 minutes',
          'the minimum age is a setting: release_reservations_min_age = 30 minutes');

SET LOCAL ROLE svc_nexus;
SELECT nexus.release_stale_reservations() AS released \gset
RESET ROLE;
SELECT is(:released, 1, 'svc_nexus: the default (1 hour, the schedule''s call) releases the 2-hour-old reservation');
SELECT is((SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'ret-ag'), 100::bigint, '... giving its tokens back');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; UPDATE ops.settings SET value = '0' WHERE key = 'release_reservations_min_age'; RESET ROLE$$,
                 '42501', NULL, 'svc_nexus cannot lower the minimum');

SELECT * FROM finish();
ROLLBACK;
