DROP TABLE IF EXISTS bus.schedule_run_requests;
ALTER TABLE bus.schedule_runs DROP COLUMN IF EXISTS recent;
