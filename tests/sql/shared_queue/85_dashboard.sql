-- The read-only bus functions behind the Nexus dashboard, /metrics and the alert pusher:
-- svc_nexus may call them; no other service role may.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(12);

SELECT has_function('bus', 'dashboard_alerts', ARRAY[]::text[], 'bus.dashboard_alerts() exists');
SELECT has_function('bus', 'dashboard_latency', ARRAY['integer'], 'bus.dashboard_latency(int) exists');
SELECT is_definer('bus', 'dashboard_alerts', ARRAY[]::text[], 'dashboard_alerts is SECURITY DEFINER (bus.alerts is owner-only)');

SELECT ok(has_function_privilege('svc_nexus', 'bus.dashboard_alerts()', 'EXECUTE'), 'svc_nexus may read the alerts');
SELECT ok(has_function_privilege('svc_nexus', 'bus.dashboard_latency(int)', 'EXECUTE'), 'svc_nexus may read latency');
SELECT ok(NOT has_function_privilege('svc_nexus', 'bus.alerts()', 'EXECUTE'), 'svc_nexus may not call bus.alerts() itself');

SELECT throws_ok('SET LOCAL ROLE svc_singularity; SELECT * FROM bus.dashboard_alerts(); RESET ROLE', '42501',
                 NULL, 'svc_singularity may not read the dashboard alerts');
SELECT throws_ok('SET LOCAL ROLE svc_genesis; SELECT * FROM bus.dashboard_latency(60); RESET ROLE', '42501',
                 NULL, 'svc_genesis may not read the latency figures');
SELECT throws_ok('SET LOCAL ROLE svc_centralcloud; SELECT * FROM bus.dashboard_alerts(); RESET ROLE', '42501',
                 NULL, 'svc_centralcloud may not read the dashboard alerts');

-- Latency: one message archived 2 s after it was enqueued.
SELECT pgmq.purge_queue('llm_requests');
SELECT pgmq.purge_queue('dead_letters');
DELETE FROM pgmq.a_llm_requests;
SELECT pgmq.send('llm_requests', '{"type":"llm_request","agent_id":"a","task_type":"chat","messages":[{"role":"user","content":"hi"}]}');
UPDATE pgmq.q_llm_requests SET enqueued_at = now() - interval '2 seconds';
SELECT pgmq.archive('llm_requests', (SELECT max(msg_id) FROM pgmq.q_llm_requests));
SELECT ok((SELECT p50_s BETWEEN 1.9 AND 2.5 FROM bus.dashboard_latency(60) WHERE queue_name = 'llm_requests'),
          'enqueue-to-archive latency of the archived message is about 2 s');
SELECT is((SELECT messages FROM bus.dashboard_latency(60) WHERE queue_name = 'llm_requests'), 1::bigint,
          'one message archived in the window');

-- Alerts: the same rows as bus.alerts().
SELECT set_eq('SELECT * FROM bus.dashboard_alerts()', 'SELECT * FROM bus.alerts()',
              'dashboard_alerts() returns exactly bus.alerts()');

SELECT * FROM finish();
ROLLBACK;
