-- Nothing to restore: the helper is gone and the flows are re-inserted by procedures of the older version.
SELECT 1;
