-- pg_cron schedules (they live in the `postgres` database, cron.database_name): the jobs migrate
-- syncs from each database's ops.cron_jobs exist with the right database, role and command, and
-- re-running the same upsert path migrate uses (schedule_in_database / alter_job) never duplicates.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(27);

SELECT has_extension('pg_cron', 'pg_cron is installed in the postgres database');
SELECT is(current_setting('cron.database_name'), 'postgres', 'cron.database_name is postgres');

-- shared_queue:prune_archives runs the retention procedure in shared_queue as its owner role.
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 1,
          'exactly one cron.job row named shared_queue:prune_archives');
SELECT is((SELECT database FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 'shared_queue',
          'shared_queue:prune_archives runs in database shared_queue');
SELECT is((SELECT username FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 'own_shared_queue',
          'shared_queue:prune_archives runs as own_shared_queue (owner of the archives, not a superuser)');
SELECT is((SELECT command FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 'CALL bus.prune_archives()',
          'shared_queue:prune_archives calls bus.prune_archives()');
SELECT is((SELECT schedule FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), '17 * * * *',
          'shared_queue:prune_archives runs hourly at minute 17');
SELECT ok((SELECT active FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 'shared_queue:prune_archives is active');

-- postgres:prune_cron_history keeps cron.job_run_details bounded; it mirrors this database's ops.cron_jobs.
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'postgres:prune_cron_history'), 1,
          'exactly one cron.job row named postgres:prune_cron_history');
SELECT is((SELECT database FROM cron.job WHERE jobname = 'postgres:prune_cron_history'), 'postgres',
          'postgres:prune_cron_history runs in database postgres');
SELECT is((SELECT username FROM cron.job WHERE jobname = 'postgres:prune_cron_history'), 'postgres',
          'postgres:prune_cron_history runs as postgres (cron.job_run_details belongs to the superuser)');
SELECT results_eq($$SELECT schedule, command FROM cron.job WHERE jobname = 'postgres:prune_cron_history'$$,
                  $$SELECT schedule, command FROM ops.cron_jobs WHERE jobname = 'prune_cron_history'$$,
                  'postgres:prune_cron_history has the schedule and command of ops.cron_jobs');
SELECT matches((SELECT command FROM cron.job WHERE jobname = 'postgres:prune_cron_history'),
               'DELETE FROM cron\.job_run_details WHERE end_time < now\(\) - interval',
               'postgres:prune_cron_history deletes old run details only');

-- Every job migrate manages is named <database>:<job> and no name appears twice (whatever the user).
SELECT is_empty($$SELECT jobname FROM cron.job GROUP BY jobname HAVING count(*) > 1$$,
                'no cron job name appears twice');
SELECT is_empty($$SELECT jobname FROM cron.job WHERE jobname LIKE '%:%' AND split_part(jobname, ':', 1) <> database$$,
                'every <database>:<job> runs in the database its name says');

-- Re-running the upsert as migrate does: schedule_in_database with the same name and role updates
-- in place, alter_job changes the row, and neither adds one.
SELECT jobid AS sq_jobid FROM cron.job WHERE jobname = 'shared_queue:prune_archives' \gset
SELECT is(cron.schedule_in_database('shared_queue:prune_archives', '17 * * * *', 'CALL bus.prune_archives()',
                                    'shared_queue', 'own_shared_queue', true),
          :sq_jobid::bigint, 'schedule_in_database again with the same name and role returns the same job id');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 1,
          'and leaves exactly one row');
SELECT lives_ok(format($$SELECT cron.alter_job(%s, '17 * * * *', 'CALL bus.prune_archives()', 'shared_queue', 'own_shared_queue', true)$$,
                       :sq_jobid),
                'alter_job on the existing id (migrate''s path when the job exists) succeeds');
SELECT lives_ok(format($$SELECT cron.alter_job(%s, '17 * * * *', 'CALL bus.prune_archives()', 'shared_queue', 'own_shared_queue', true)$$,
                       :sq_jobid),
                'alter_job again with the same values succeeds (idempotent)');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), 1,
          'still exactly one shared_queue:prune_archives row after re-running the upsert');
SELECT is((SELECT jobid FROM cron.job WHERE jobname = 'shared_queue:prune_archives'), :sq_jobid::bigint,
          'the job kept its id (history in cron.job_run_details stays attached)');
SELECT throws_ok($$SELECT cron.schedule_in_database('x_bad_schedule', 'every hour', 'SELECT 1', 'shared_queue', 'own_shared_queue', true)$$,
                 '22023', NULL, 'pg_cron refuses an invalid schedule (22023)');

-- postgres:report_schedules pushes every job's last run to shared_queue each minute, as the superuser.
SELECT results_eq($$SELECT database, username, schedule, command FROM cron.job WHERE jobname = 'postgres:report_schedules'$$,
                  $$VALUES ('postgres'::text, 'postgres'::text, '* * * * *'::text, 'SELECT ops.report_schedules()'::text)$$,
                  'postgres:report_schedules runs ops.report_schedules() each minute in postgres as postgres');
SELECT has_extension('dblink', 'dblink is installed in the postgres database (the report''s way to shared_queue)');
SELECT has_index('cron', 'job_run_details', 'job_run_details_jobid_start_idx',
                 'cron.job_run_details has an index by job and start time (the report reads the last run per job)');
SELECT ok(NOT has_function_privilege('public', 'ops.report_schedules()', 'EXECUTE'),
          'PUBLIC may not run ops.report_schedules()');
SELECT is(ops.report_schedules(), (SELECT count(*)::int FROM cron.job WHERE jobname IS NOT NULL),
              'ops.report_schedules() reports every job to shared_queue over dblink');

SELECT * FROM finish();
ROLLBACK;
