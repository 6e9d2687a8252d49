DROP TABLE IF EXISTS centralcloud.git_schedule;
