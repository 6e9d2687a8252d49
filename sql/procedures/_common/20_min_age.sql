-- Retention functions a service role may call enforce a minimum from ops.settings (the owner's to
-- change), so a service cannot erase what it must keep (DESIGN.md 8b). One refusal for all of them.

-- 22023 naming function P_FN, what it was given (P_GIVEN), the minimum P_MIN and setting P_KEY; the
-- hint says what to do (P_ADVICE) and how the database owner changes the minimum.
CREATE OR REPLACE FUNCTION ops.refuse_below_minimum(p_fn text, p_given text, p_min text, p_key text, p_advice text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%: % is below the minimum of % (ops.settings %)', p_fn, coalesce(p_given, 'NULL'), p_min, p_key
        USING ERRCODE = 'invalid_parameter_value',
              HINT = pg_catalog.format('%s The database owner (%s) may change the minimum: '
                                       'UPDATE ops.settings SET value = ''<value>'' WHERE key = %L.', p_advice,
                                       (SELECT pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d
                                         WHERE d.datname = pg_catalog.current_database()), p_key);
END;
$$;
COMMENT ON FUNCTION ops.refuse_below_minimum(text, text, text, text, text) IS
    'Raises 22023 for a retention call under its ops.settings minimum, with the fix.';
