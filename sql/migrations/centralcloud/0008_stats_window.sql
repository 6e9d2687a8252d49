-- depends: 0007_git_schedule
-- refresh_statistics gains an upper bound (p_until, default infinity) so that a day restored from cold
-- storage is refreshed alone; the one-argument version would make every call ambiguous.
DROP FUNCTION IF EXISTS centralcloud.refresh_statistics(timestamptz);
