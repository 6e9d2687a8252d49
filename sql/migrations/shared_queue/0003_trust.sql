-- depends: 0002_schedule_runs
-- Dead letters are written only by bus._bury (procedures), which replaces the old helper that a
-- service role could call with any content.
DROP FUNCTION IF EXISTS bus._send_dead_letter(text, bigint, jsonb, text, int);
DELETE FROM bus.flows WHERE kind = 'dead_letters';
