-- pg_cron's schedules as reported into shared_queue (bus.schedule_runs): the report replaces the
-- snapshot, bus.alerts() names a failed last run and a stale report with what to do, svc_nexus
-- reads them through bus.dashboard_schedules() and nobody but the owner may write them.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(24);

SELECT has_table('bus', 'schedule_runs', 'bus.schedule_runs exists');
SELECT is_definer('bus', 'dashboard_schedules', ARRAY[]::text[], 'dashboard_schedules is SECURITY DEFINER');
SELECT throws_ok($$SELECT bus._report_schedules('{"jobname": "x"}')$$, '22023',
                 'bus._report_schedules: expected a JSON array of jobs, got object',
                 'a report that is not an array is refused, naming what it got');

DELETE FROM bus.schedule_runs;
SELECT is(bus._report_schedules($$[
    {"jobname": "singularity:learn_patterns", "schedule": "*/5 * * * *", "database": "singularity", "active": true,
     "last_status": "succeeded", "last_start": "2026-12-01T10:00:00Z", "last_message": "SELECT 1",
     "runs_24h": 288, "failures_24h": 0},
    {"jobname": "centralcloud:aggregate", "schedule": "0 * * * *", "database": "centralcloud", "active": true,
     "last_status": "failed", "last_start": "2026-12-01T10:00:00Z",
     "last_message": "ERROR:  relation \"centralcloud.patterns\" does not exist", "runs_24h": 24, "failures_24h": 3},
    {"jobname": "genesis:prune_executions", "schedule": "17 3 * * *", "database": "genesis", "active": true}
]$$), 3, 'a report of three jobs stores three rows');
SELECT results_eq($$SELECT jobname, last_status, runs_24h, failures_24h FROM bus.schedule_runs ORDER BY 1$$,
                  $$VALUES ('centralcloud:aggregate', 'failed', 24, 3),
                           ('genesis:prune_executions', NULL, 0, 0),
                           ('singularity:learn_patterns', 'succeeded', 288, 0)$$,
                  'each job with its last status and 24 h counts; a job never run has no status and zero counts');

-- Alerts: the failed job, with its error and the fix; the others are quiet.
SELECT is((SELECT message FROM bus.alerts() WHERE subject = 'centralcloud:aggregate'),
          'last run failed: ERROR:  relation "centralcloud.patterns" does not exist',
          'a failed last run is an alert carrying pg_cron''s error');
SELECT matches((SELECT fix FROM bus.alerts() WHERE subject = 'centralcloud:aggregate'),
               'fix its SQL or its database', 'and says what to do');
SELECT is_empty($$SELECT 1 FROM bus.alerts() WHERE subject IN ('singularity:learn_patterns', 'genesis:prune_executions', 'schedules')$$,
                'a succeeded job, a job never run and a fresh report raise nothing');

-- A run cut by a server restart is not the job's fault, and the fix says how to run it now.
SELECT is(bus._report_schedules($$[
    {"jobname": "centralcloud:aggregate", "schedule": "0 * * * *", "database": "centralcloud", "active": true,
     "last_status": "failed", "last_message": "server restarted", "runs_24h": 24, "failures_24h": 1},
    {"jobname": "singularity:sync_learning", "schedule": "*/10 * * * *", "database": "singularity", "active": false,
     "last_status": "failed", "last_message": "ERROR:  boom"}
]$$), 2, 'a second report stores its two jobs');
SELECT is((SELECT count(*)::int FROM bus.schedule_runs WHERE jobname IN ('singularity:learn_patterns', 'genesis:prune_executions')), 0,
          'jobs missing from the new report (unscheduled) are removed');
SELECT is((SELECT fix FROM bus.alerts() WHERE subject = 'centralcloud:aggregate'),
          'nothing is wrong with the job: the server restarted while it ran; it runs again on schedule, or now: orchestrator centralcloud run aggregate',
          'a run failed by a server restart says nothing is wrong with the job and how to run it now');
SELECT is_empty($$SELECT 1 FROM bus.alerts() WHERE subject = 'singularity:sync_learning'$$,
                'a paused (inactive) job does not alert');

-- Databases on several servers: each server's report replaces only its own databases' jobs.
SELECT is(bus._report_schedules_from($$[
    {"jobname": "genesis:prune_executions", "schedule": "0 4 * * *", "database": "genesis", "active": true}
]$$, ARRAY['genesis', 'nexus']), 1, 'a report of one server (genesis, nexus) stores its job');
SELECT is((SELECT count(*)::int FROM bus.schedule_runs WHERE jobname IN ('centralcloud:aggregate', 'singularity:sync_learning')), 2,
          'the jobs of databases on other servers are kept');
SELECT is(bus._report_schedules_from('[]', ARRAY['genesis']), 0, 'an empty report of the genesis server');
SELECT is((SELECT count(*)::int FROM bus.schedule_runs WHERE database = 'genesis'), 0,
          'removes the jobs of that server''s databases only');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT bus._report_schedules_from('[]', NULL)$$, '42501', NULL,
                 'svc_nexus may not write a server''s report');

-- A report that stopped arriving is an alert of its own.
UPDATE bus.schedule_runs SET reported_at = now() - interval '10 minutes';
SELECT matches((SELECT message FROM bus.alerts() WHERE subject = 'schedules'), '^pg_cron has not reported the schedules for 6\d\d s$',
               'a report older than 5 minutes raises "schedules" with its age');
SELECT matches((SELECT fix FROM bus.alerts() WHERE subject = 'schedules'), 'postgres:report_schedules',
               'and names the job that reports them');

-- Who may do what.
SELECT lives_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM bus.dashboard_schedules(); RESET ROLE$$,
                'svc_nexus reads the schedules through bus.dashboard_schedules()');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT bus._report_schedules('[]')$$, '42501', NULL,
                 'svc_nexus may not write the report');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM bus.schedule_runs$$, '42501', NULL,
                 'svc_nexus may not read bus.schedule_runs directly');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT * FROM bus.dashboard_schedules()$$, '42501', NULL,
                 'svc_singularity may not read the schedules');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM bus._schedule_alerts()$$, '42501', NULL,
                 'svc_nexus may not call the internal bus._schedule_alerts() (it reads them through dashboard_alerts)');

SELECT * FROM finish();
ROLLBACK;
