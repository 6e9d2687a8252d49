-- CentralCloud's archive statistics (bus.cc_archive_*), on fixture archive rows from 2001 (so that
-- whatever else is archived does not matter): counts, p50/p95 latency per hour and day, approval
-- rates, questions per agent, LLM usage; the since-window; only svc_centralcloud may call them.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(16);

-- 10 approval responses on 2001-01-01 10:xx, latency 100..1000 ms, 7 approved
INSERT INTO pgmq.a_approval_responses (msg_id, read_ct, enqueued_at, archived_at, vt, message)
SELECT 9000000000 + i, 1 + (i = 10)::int, '2001-01-01 10:00:00+00'::timestamptz + make_interval(mins => i),
       '2001-01-01 10:00:00+00'::timestamptz + make_interval(mins => i) + make_interval(secs => i * 0.1), now(),
       jsonb_build_object('type', 'approval_response', 'request_id', 'r' || i, 'approved', i <= 7, 'decided_by', 'bob')
  FROM generate_series(1, 10) i;
-- 4 questions on 2001-01-02: a1 x3, a2 x1
INSERT INTO pgmq.a_question_requests (msg_id, read_ct, enqueued_at, archived_at, vt, message)
SELECT 9000000100 + i, 1, '2001-01-02 08:00:00+00', '2001-01-02 08:00:01+00', now(),
       jsonb_build_object('type', 'question_request', 'agent_id', CASE WHEN i <= 3 THEN 'a1' ELSE 'a2' END, 'question', 'q?')
  FROM generate_series(1, 4) i;
-- 3 LLM results on 2001-01-02: two with usage, one error
INSERT INTO pgmq.a_llm_results (msg_id, read_ct, enqueued_at, archived_at, vt, message) VALUES
  (9000000201, 1, '2001-01-02 09:00:00+00', '2001-01-02 09:00:02+00', now(),
   '{"type": "llm_result", "request_id": "x1", "model": "m1", "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01}}'),
  (9000000202, 1, '2001-01-02 09:00:00+00', '2001-01-02 09:00:02+00', now(),
   '{"type": "llm_result", "request_id": "x2", "model": "m1", "usage": {"prompt_tokens": 20, "completion_tokens": 7, "cost": 0.02}}'),
  (9000000203, 1, '2001-01-02 09:00:00+00', '2001-01-02 09:00:02+00', now(),
   '{"type": "llm_result", "request_id": "x3", "model": "m1", "usage": null, "error": "timeout"}');

SET LOCAL ROLE svc_centralcloud;
SELECT messages AS h_n, p50_ms AS h_p50, p95_ms AS h_p95, max_read_ct AS h_max
  FROM bus.cc_archive_latency('2001-01-01') WHERE bucket = 'hour' AND bucket_start = '2001-01-01 10:00+00'
   AND queue_name = 'approval_responses' \gset
SELECT messages AS d_n, p50_ms AS d_p50 FROM bus.cc_archive_latency('2001-01-01')
 WHERE bucket = 'day' AND bucket_start = '2001-01-01 00:00+00' AND queue_name = 'approval_responses' \gset
SELECT count(*) AS late_n FROM bus.cc_archive_latency('2001-01-02') WHERE bucket_start < '2001-01-02' \gset
SELECT decisions AS a_n, approved AS a_ok FROM bus.cc_archive_approvals('2001-01-01') WHERE day = '2001-01-01' \gset
SELECT string_agg(agent_id || '=' || questions, ',' ORDER BY agent_id) AS q FROM bus.cc_archive_questions('2001-01-01')
 WHERE day = '2001-01-02' \gset
SELECT calls AS l_calls, errors AS l_err, prompt_tokens AS l_in, completion_tokens AS l_out, cost AS l_cost
  FROM bus.cc_archive_llm('2001-01-01') WHERE day = '2001-01-02' AND model = 'm1' \gset
RESET ROLE;

SELECT is(:h_n::bigint, 10::bigint, 'hourly bucket counts the 10 approval responses');
SELECT is(round(:h_p50::numeric, 3), 550.000, 'hourly p50 latency is 550 ms');
SELECT is(round(:h_p95::numeric, 3), 955.000, 'hourly p95 latency is 955 ms');
SELECT is(:h_max::int, 2, 'max read_ct per bucket');
SELECT is(:d_n::bigint, 10::bigint, 'daily bucket has the same 10');
SELECT is(round(:d_p50::numeric, 3), 550.000, 'daily p50 latency is 550 ms');
SELECT is(:late_n::bigint, 0::bigint, 'rows archived before the since-time are not counted');
SELECT is(:a_n::bigint, 10::bigint, 'approval decisions per day');
SELECT is(:a_ok::bigint, 7::bigint, 'approvals per day');
SELECT is(:'q'::text, 'a1=3,a2=1'::text, 'questions per agent per day');
SELECT is(:l_calls::bigint, 3::bigint, 'LLM calls per model per day');
SELECT is(:l_err::bigint, 1::bigint, 'LLM errors per model per day');
SELECT is(:l_in::bigint + :l_out::bigint, 42::bigint, 'LLM tokens from usage (a null usage counts nothing)');
SELECT is(:l_cost::numeric, 0.03, 'LLM cost from usage');

SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM bus.cc_archive_latency(now()); RESET ROLE$$, '42501',
                 NULL, 'svc_nexus may not call the CentralCloud statistics');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT * FROM bus.cc_archive_llm(now()); RESET ROLE$$, '42501',
                 NULL, 'svc_singularity may not call the CentralCloud statistics');

SELECT * FROM finish();
ROLLBACK;
