-- The ledger (centralcloud.received) is what drops a redelivered message; the job log is the record of
-- every run. svc_centralcloud runs the jobs but may not erase either: no DELETE, TRUNCATE or UPDATE of
-- their keys; only centralcloud.prune() deletes, after the ages in centralcloud.settings (owner only).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(9);

INSERT INTO centralcloud.received (queue_name, msg_id, received_at) VALUES
    ('pattern_messages', -901, now() - interval '1 hour'), ('pattern_messages', -902, now() - interval '30 days');
INSERT INTO centralcloud.job_runs (job, started_at, finished_at, ok, result) VALUES
    ('ret-x', now() - interval '1 hour', now() - interval '1 hour', true, 'recent');

SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; DELETE FROM centralcloud.received; RESET ROLE$$, '42501', NULL,
                 'svc_centralcloud cannot delete the ledger');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; TRUNCATE centralcloud.received; RESET ROLE$$, '42501', NULL,
                 'svc_centralcloud cannot truncate the ledger');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; UPDATE centralcloud.received SET msg_id = -msg_id; RESET ROLE$$, '42501', NULL,
                 'svc_centralcloud cannot rewrite ledger keys');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; DELETE FROM centralcloud.job_runs; RESET ROLE$$, '42501', NULL,
                 'svc_centralcloud cannot delete the job log');
SELECT lives_ok($$SET LOCAL ROLE svc_centralcloud; UPDATE centralcloud.received SET rejected = rejected WHERE msg_id = -901; RESET ROLE$$,
                'svc_centralcloud may still record rejects (what the fold does)');

SET LOCAL ROLE svc_centralcloud;
SELECT centralcloud.prune() AS pruned \gset
RESET ROLE;
SELECT ok(:pruned >= 1, 'svc_centralcloud: prune() (package_sync''s call) deletes the 30-day-old ledger entry');
SELECT is((SELECT count(*)::int FROM centralcloud.received WHERE msg_id IN (-901, -902)), 1,
          'the recent ledger entry stays (ledger_days = 7)');
SELECT is((SELECT count(*)::int FROM centralcloud.job_runs WHERE job = 'ret-x'), 1, 'the recent job run stays');
SELECT throws_ok($$SET LOCAL ROLE svc_centralcloud; UPDATE centralcloud.settings SET value = '0' WHERE key = 'ledger_days'; RESET ROLE$$,
                 '42501', NULL, 'svc_centralcloud cannot shorten the ledger''s age');

SELECT * FROM finish();
ROLLBACK;
