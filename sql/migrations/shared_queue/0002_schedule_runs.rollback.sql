DROP TABLE IF EXISTS bus.schedule_runs;
