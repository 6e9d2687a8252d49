-- Retention of executions (pg_cron job genesis:prune_executions, as svc_genesis). A finished row is
-- what answers a redelivered request instead of running it again, so it must outlive any
-- redelivery: genesis.prune_executions refuses (22023, with the fix) fewer days than the minimum
-- in ops.settings prune_executions_min_days, which only the owner role may change. Refused, not
-- clamped: a caller asking for less learns that its call did not do what it asked.
INSERT INTO ops.settings (key, value, comment) VALUES
    ('prune_executions_min_days', '7',
     'genesis.prune_executions refuses fewer days: a redelivered request must still find its finished row')
ON CONFLICT (key) DO NOTHING;

-- Delete finished executions older than P_DAYS (at least prune_executions_min_days); returns how many.
CREATE OR REPLACE FUNCTION genesis.prune_executions(p_days int DEFAULT 30)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    min_days int := coalesce((SELECT s.value::int FROM ops.settings s WHERE s.key = 'prune_executions_min_days'), 7);
    n int;
BEGIN
    IF p_days IS NULL OR p_days < min_days THEN
        PERFORM ops.refuse_below_minimum('genesis.prune_executions', p_days || ' days', min_days || ' days',
                                         'prune_executions_min_days', format('Prune with at least %s days.', min_days));
    END IF;
    WITH d AS (DELETE FROM genesis.executions e WHERE e.status = 'finished'
                AND e.finished_at < now() - make_interval(days => p_days) RETURNING 1)
    SELECT count(*)::int INTO n FROM d;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION genesis.prune_executions(int) IS
    'Delete finished executions older than DAYS (at least ops.settings prune_executions_min_days); returns how many.';
