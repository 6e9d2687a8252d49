-- Nothing to restore: no version of the code that has this migration's predecessors reads read_vt_s.
SELECT 1;
