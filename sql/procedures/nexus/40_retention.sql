-- Releasing budget reservations (pg_cron job nexus:release_reservations, as svc_nexus). A reservation
-- is the budget held by a request in flight, so nexus.release_stale_reservations refuses (22023, with
-- the fix) an age under the minimum in ops.settings release_reservations_min_age, which only the
-- owner role may change. Refused, not clamped: the caller learns its call did not do what it asked.
INSERT INTO ops.settings (key, value, comment) VALUES
    ('release_reservations_min_age', '30 minutes',
     'nexus.release_stale_reservations refuses a younger age: the reservations of requests in flight stay')
ON CONFLICT (key) DO NOTHING;

-- A worker that died mid-call leaves its reservation behind; a redelivery reuses it, but a request
-- that is never retried (dead-lettered) would hold it all day. Release reservations older than P_AGE.
CREATE OR REPLACE FUNCTION nexus.release_stale_reservations(p_age interval DEFAULT '1 hour')
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    min_age interval := coalesce((SELECT s.value::interval FROM ops.settings s
                                   WHERE s.key = 'release_reservations_min_age'), '30 minutes');
    n int;
BEGIN
    IF p_age IS NULL OR p_age < min_age THEN
        PERFORM ops.refuse_below_minimum('nexus.release_stale_reservations', p_age::text, min_age::text,
                                         'release_reservations_min_age',
                                         format('Release reservations older than at least %s.', min_age));
    END IF;
    WITH gone AS (DELETE FROM nexus.reservations r WHERE r.created_at < now() - p_age RETURNING r.*),
         per AS (SELECT g.agent_id, g.day, sum(g.tokens) AS tokens, sum(g.cost) AS cost, count(*) AS k
                   FROM gone g GROUP BY 1, 2),
         upd AS (UPDATE nexus.budget_usage u SET tokens = greatest(0, u.tokens - per.tokens),
                        cost = greatest(0, u.cost - per.cost)
                   FROM per WHERE u.agent_id = per.agent_id AND u.day = per.day RETURNING per.k)
    SELECT coalesce(sum(upd.k), 0) INTO n FROM upd;
    DELETE FROM nexus.sessions s WHERE s.expires_at < now();
    RETURN n;
END;
$$;
COMMENT ON FUNCTION nexus.release_stale_reservations(interval) IS
    'Gives back reservations of requests never settled (older than P_AGE, at least ops.settings '
    'release_reservations_min_age) and drops expired sessions.';
