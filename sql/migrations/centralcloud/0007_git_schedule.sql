-- depends: 0001_centralcloud
-- The Git jobs' schedule as data (it was a rule in the worker's Python): each job's period and offset
-- from midnight UTC. The worker asks centralcloud.git_jobs_due() which configured jobs are due.
CREATE TABLE centralcloud.git_schedule (
    job   text PRIMARY KEY CHECK (job IN ('knowledge-export', 'template-distribution')),
    every interval NOT NULL CHECK (every > interval '0'),
    at    interval NOT NULL DEFAULT '0' CHECK (at >= interval '0')
);
COMMENT ON TABLE centralcloud.git_schedule IS 'When the Git jobs run: every EVERY, offset AT from midnight UTC.';
INSERT INTO centralcloud.git_schedule (job, every, at) VALUES
    ('knowledge-export', '1 day', '01:00'),
    ('template-distribution', '4 hours', '0');
