-- Heartbeat liveness is decided in one place, bus.heartbeat_status(), with the thresholds of
-- bus.settings; the alerts use it; a graceful stop is not late; the bus's time counts, not the sender's.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(6);
DELETE FROM pgmq.q_instance_heartbeat;
DELETE FROM pgmq.a_instance_heartbeat;
SELECT bus.set_setting('alert_heartbeat_late_s', '60'), bus.set_setting('alert_heartbeat_gone_s', '600');
SET LOCAL ROLE svc_genesis;
SELECT pgmq.send('instance_heartbeat', '{"instance_id": "g1", "service": "genesis", "at": "2099-01-01T00:00:00Z"}');
SELECT pgmq.send('instance_heartbeat', '{"instance_id": "g2", "service": "genesis", "at": "2099-01-01T00:00:00Z"}');
SELECT pgmq.send('instance_heartbeat', '{"instance_id": "g3", "service": "genesis", "at": "2099-01-01T00:00:00Z", "stats": {"state": "stopped"}}');
SELECT pgmq.send('instance_heartbeat', '{"instance_id": "g4", "service": "genesis", "at": "2000-01-01T00:00:00Z"}');
RESET ROLE;
UPDATE pgmq.q_instance_heartbeat SET enqueued_at = now() - interval '2 minutes' WHERE message->>'instance_id' = 'g2';
UPDATE pgmq.q_instance_heartbeat SET enqueued_at = now() - interval '20 minutes' WHERE message->>'instance_id' IN ('g1', 'g3');
SELECT results_eq($$SELECT instance_id, status FROM bus.heartbeat_status() ORDER BY instance_id$$,
                  $$VALUES ('g1', 'gone'), ('g2', 'late'), ('g3', 'stopped'), ('g4', 'healthy')$$,
                  'gone past 600 s, late past 60 s, stopped when its last beat said so, healthy otherwise');
SELECT is((SELECT status FROM bus.heartbeat_status() WHERE instance_id = 'g4'), 'healthy',
          'the bus''s time counts: a sender claiming the year 2000 is still healthy');
SELECT set_eq($$SELECT subject, severity FROM bus.alerts() WHERE subject LIKE 'genesis:g%'$$,
              $$VALUES ('genesis:g1', 'critical'), ('genesis:g2', 'warning')$$,
              'the alerts come from the same function: gone is critical, late a warning, stopped none');
SELECT bus.set_setting('alert_heartbeat_late_s', '600');
SELECT is((SELECT status FROM bus.heartbeat_status() WHERE instance_id = 'g2'), 'healthy',
          'the threshold is the bus setting');
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT * FROM bus.heartbeat_status()$$, '42501', NULL,
                 'a service role may not read every service''s liveness (operator and dashboard only)');
SELECT ok(NOT EXISTS (SELECT 1 FROM bus.alerts() WHERE subject = 'genesis:g3'), 'a graceful stop raises no alert');
SELECT * FROM finish();
ROLLBACK;
