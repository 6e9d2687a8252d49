-- Log cleanup callable by the service role: core.cleanup_logs refuses to keep less than the minimum
-- in ops.settings (cleanup_logs_min_keep, 1 day by default), which only the owner can change, so
-- svc_singularity (which may not DELETE logs) cannot erase recent logs through it either.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(9);
TRUNCATE core.logs;
INSERT INTO core.logs (at, level, message) VALUES
    (now() - interval '1 hour', 'error', 'recent error'), (now() - interval '2 hours', 'info', 'recent info'),
    (now() - interval '8 days', 'info', 'old info');

SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT core.cleanup_logs('0', '0'); RESET ROLE$$, '22023',
                 'core.cleanup_logs: keeping 00:00:00 is below the minimum of 1 day (ops.settings cleanup_logs_min_keep)',
                 'svc_singularity: cleanup_logs(0, 0) is refused');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT core.cleanup_logs('7 days', '1 minute'); RESET ROLE$$, '22023', NULL,
                 'svc_singularity: a short keep for errors is refused too');
SELECT is((SELECT count(*)::int FROM core.logs WHERE message LIKE 'recent%'), 2, 'recent logs survive');
SELECT is((SELECT value FROM ops.settings WHERE key = 'cleanup_logs_min_keep'), '1 day',
          'the minimum is a setting: cleanup_logs_min_keep = 1 day');

SET LOCAL ROLE svc_singularity;
SELECT core.cleanup_logs() AS cleaned \gset
RESET ROLE;
SELECT is(:cleaned, 1, 'svc_singularity: the defaults (the schedule''s call) delete the 8-day-old info log');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; UPDATE ops.settings SET value = '0' WHERE key = 'cleanup_logs_min_keep'; RESET ROLE$$,
                 '42501', NULL, 'svc_singularity cannot lower the minimum');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT * FROM ops.settings; RESET ROLE$$, '42501', NULL,
                 'svc_singularity cannot read ops.settings either');

-- archiving moves finished tasks out of core.tasks: the same minimum age rule (archive_tasks_min_age)
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT core.archive_completed_tasks('0'); RESET ROLE$$, '22023',
                 'core.archive_completed_tasks: 00:00:00 is below the minimum of 1 day (ops.settings archive_tasks_min_age)',
                 'svc_singularity: archive_completed_tasks(0) is refused');
SELECT is((SELECT value FROM ops.settings WHERE key = 'archive_tasks_min_age'), '1 day',
          'the minimum is a setting: archive_tasks_min_age = 1 day');

SELECT * FROM finish();
ROLLBACK;
