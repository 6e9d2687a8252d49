-- Cold storage (bus.cold_*): the catalog is the operator's; an export is recorded only when its rows
-- are exactly the live rows; the checksum does not depend on the session; restore never doubles a row;
-- the archive view and CentralCloud's statistics sources include restored days.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(22);

SET LOCAL client_min_messages = warning;
SELECT (bus.cold_cutoff() - 3) AS d \gset
INSERT INTO pgmq.a_job_results (msg_id, read_ct, enqueued_at, archived_at, vt, message)
SELECT -600000 - i, 1, (:'d'::date)::timestamp AT TIME ZONE 'UTC' + make_interval(secs => i),
       (:'d'::date)::timestamp AT TIME ZONE 'UTC' + make_interval(secs => i), now(),
       jsonb_build_object('type', 'job_result', 'request_id', 'c' || i, 'output', 'é ' || i)
  FROM generate_series(1, 5) i;

-- 1. who may call it
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; SELECT * FROM bus.cold_lines('job_results', current_date)$$,
                 '42501', NULL, 'svc_centralcloud may not read cold lines (the exporter is the operator)');
RESET ROLE;
SELECT throws_ok($$SET LOCAL ROLE svc_genesis; SELECT bus.cold_record('job_results', current_date - 1000, 'f', 0, '', '', 0)$$,
                 '42501', NULL, 'a service role may not record an export (it would make rows prunable)');
RESET ROLE;
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT bus.cold_restore_lines('job_results', current_date, '{}')$$,
                 '42501', NULL, 'a service role may not restore rows into the archive');
RESET ROLE;
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; INSERT INTO bus.cold_exports VALUES ('job_results', current_date, 'f', 0, NULL, NULL, '', '', 0)$$,
                 '42501', NULL, 'a service role may not write the catalog');
RESET ROLE;
SELECT lives_ok($$SET LOCAL ROLE svc_centralcloud; SELECT count(*) FROM bus.restored_archive$$,
                'svc_centralcloud reads restored rows (they are archives, which it may read)');
RESET ROLE;

SET LOCAL ROLE own_shared_queue;
-- 2. lines and checksum
SELECT is((SELECT count(*) FROM bus.cold_lines('job_results', :'d')), 5::bigint, 'one line per archive row of the day');
SELECT is((SELECT rows FROM bus.cold_digest('job_results', :'d')), 5::bigint, 'the digest counts them');
SELECT is((SELECT checksum FROM bus.cold_digest('job_results', :'d')),
          (SELECT encode(sha256(convert_to(string_agg(md5(line), '' ORDER BY msg_id), 'UTF8')), 'hex')
             FROM bus.cold_lines('job_results', :'d')),
          'checksum = sha256 over the md5 of each line in msg_id order');
SELECT checksum AS c_utc FROM bus.cold_digest('job_results', :'d') \gset
SET LOCAL timezone = 'Pacific/Chatham';
SELECT is((SELECT checksum FROM bus.cold_digest('job_results', :'d')), :'c_utc',
          'the checksum does not depend on the session''s time zone (lines are written in UTC)');
SELECT ok((SELECT line FROM bus.cold_lines('job_results', :'d') LIMIT 1) LIKE '%+00:00%', 'timestamps in lines are UTC');
RESET timezone;
SELECT ok(EXISTS (SELECT 1 FROM bus.cold_pending() WHERE queue_name = 'job_results' AND day = :'d' AND rows = 5),
          'the day is pending export');
SELECT throws_ok($$SELECT bus.cold_lines('no_such_queue', current_date)$$, '22023', 'unknown queue no_such_queue',
                 'an unknown queue is refused by name');

-- 3. recording an export
SELECT throws_ok(format($$SELECT bus.cold_record('job_results', %L, 'f', 4, %L, 'sha', 10)$$, :'d', :'c_utc'), '22000', NULL,
                 'a file with fewer rows than the archive is not recorded');
SELECT throws_ok(format($$SELECT bus.cold_record('job_results', %L, 'f', 5, 'bad', 'sha', 10)$$, :'d'), '22000', NULL,
                 'a file whose rows differ (checksum) is not recorded');
SELECT throws_ok($$SELECT bus.cold_record('job_results', current_date, 'f', 0, '', 'sha', 10)$$, '22023', NULL,
                 'a day inside the retention window is not exported');
SELECT lives_ok(format($$SELECT bus.cold_record('job_results', %L, 'f', 5, %L, 'sha', 10)$$, :'d', :'c_utc'),
                'the exact rows are recorded');
SELECT is((SELECT state FROM bus.cold_catalog() WHERE queue_name = 'job_results' AND day = :'d'), 'verified',
          'the day is verified, so retention may delete it');
SELECT ok(NOT EXISTS (SELECT 1 FROM bus.cold_pending() WHERE queue_name = 'job_results' AND day = :'d'),
          'and no longer pending');

-- 4. restore
SELECT array_agg(line ORDER BY msg_id) AS lines FROM bus.cold_lines('job_results', :'d') \gset
SELECT is(bus.cold_restore_lines('job_results', :'d', :'lines'), 5::bigint,
          'rows are restored even while still live (their day may be half pruned and lose them next)');
SELECT is((SELECT count(*) FROM bus.archived_messages WHERE msg_id BETWEEN -600005 AND -600001), 5::bigint,
          'bus.archived_messages shows a row that is both live and restored once');
DELETE FROM pgmq.a_job_results WHERE msg_id BETWEEN -600005 AND -600001;
SELECT is((SELECT count(*) FROM bus.archived_messages WHERE msg_id BETWEEN -600005 AND -600001), 5::bigint,
          'pruned, the restored rows are still there, once');
SELECT is(bus.cold_restore_lines('job_results', :'d', :'lines'), 0::bigint, 'restoring again adds nothing');

SELECT * FROM finish();
ROLLBACK;
