-- Sign-in for the HITL page. Hashes are scrypt, made in Python (`scrypt$N$r$p$salt$key`, base64); the
-- page's role (svc_nexus) never reads one. It asks nexus.login_params for the salt and parameters,
-- derives the key from the typed password in Python, and nexus.sign_in compares that key and starts
-- the session in one call. No password ever appears in SQL text, only the derived key.
--
-- The throttle counts failed sign-ins of the last 15 minutes (nexus.signin_failures, shared by every
-- daemon). An attempt is held back (nothing compared, nothing recorded) when
--   from a browser known for the user (nexus.signin_devices): that browser has 5 failures for the user;
--   otherwise: 5 failures for this user name from this address, or 20 from this address over all
--              names, or 20 for this user name over all addresses.
-- Addresses are the client's (IPv6: its /64). docs/nexus.md explains the choice.
-- Every definer pins search_path = pg_catalog, pg_temp and names every object with its schema.

CREATE OR REPLACE FUNCTION nexus._password_hash_ok(p_hash text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b64 CONSTANT text := '(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?';
    v_n int;
BEGIN
    IF p_hash IS NULL OR p_hash !~ ('^scrypt\$[0-9]{1,9}\$[0-9]{1,4}\$[0-9]{1,4}\$' || b64 || '\$' || b64 || '$') THEN
        RETURN false;
    END IF;
    v_n := split_part(p_hash, '$', 2)::int;
    RETURN v_n > 1 AND v_n & (v_n - 1) = 0 AND split_part(p_hash, '$', 3)::int > 0 AND split_part(p_hash, '$', 4)::int > 0;
END;
$$;
COMMENT ON FUNCTION nexus._password_hash_ok(text) IS
    'True for a well-formed scrypt$N$r$p$salt$key hash (N a power of two, base64 salt and key).';

CREATE OR REPLACE FUNCTION nexus.user_set(p_username text, p_password_hash text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT nexus._password_hash_ok(p_password_hash) THEN
        RAISE EXCEPTION 'not a password hash: expected scrypt$N$r$p$salt$key'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'add users with `orchestrator nexus user add NAME`, which hashes the password';
    END IF;
    INSERT INTO nexus.users AS u (username, password_hash) VALUES (p_username, p_password_hash)
    ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash;
END;
$$;
COMMENT ON FUNCTION nexus.user_set(text, text) IS 'Adds a user or changes their password hash (operator only).';

CREATE OR REPLACE FUNCTION nexus.user_remove(p_username text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM nexus.users WHERE username = p_username RETURNING 1) SELECT EXISTS (SELECT 1 FROM d);
$$;
COMMENT ON FUNCTION nexus.user_remove(text) IS 'Removes a user, their sessions and known browsers (operator only).';

CREATE OR REPLACE FUNCTION nexus._password_parts(p_username text)
RETURNS TABLE (known boolean, salt bytea, n int, r int, p int, dk bytea)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hash text;
    v_secret bytea;
    v_name bytea := convert_to(coalesce(p_username, ''), 'UTF8');
    v_model text;
BEGIN
    -- the same statements for every name, known or not (no timing difference to measure):
    -- the user's hash, and the stand-ins for a name that is not a user (or has an unusable hash): a
    -- salt that is the same on every call and unguessable, the parameters of the newest user (else the
    -- defaults of orchestrator/passwords.py), and a key nothing derives
    SELECT u.password_hash INTO v_hash FROM nexus.users u WHERE u.username = p_username;
    SELECT s.secret INTO v_secret FROM nexus.signin_secret s;
    SELECT u.password_hash INTO v_model FROM nexus.users u
     WHERE nexus._password_hash_ok(u.password_hash) ORDER BY u.created_at DESC, u.username LIMIT 1;
    IF nexus._password_hash_ok(v_hash) THEN
        RETURN QUERY SELECT true, decode(split_part(v_hash, '$', 5), 'base64'), split_part(v_hash, '$', 2)::int,
                            split_part(v_hash, '$', 3)::int, split_part(v_hash, '$', 4)::int,
                            decode(split_part(v_hash, '$', 6), 'base64');
        RETURN;
    END IF;
    v_model := coalesce(v_model, 'scrypt$16384$8$1$-$-');
    RETURN QUERY SELECT false, substring(sha256(v_secret || '\x00'::bytea || v_name) FROM 1 FOR 16),
                        split_part(v_model, '$', 2)::int, split_part(v_model, '$', 3)::int,
                        split_part(v_model, '$', 4)::int, sha256(v_secret || '\x01'::bytea || v_name);
END;
$$;
COMMENT ON FUNCTION nexus._password_parts(text) IS
    'Salt, scrypt parameters and key of a user''s hash; for an unknown name, stand-ins of the same shape (known = false).';

CREATE OR REPLACE FUNCTION nexus._signin_addr(p_addr inet)
RETURNS inet
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_addr IS NULL THEN inet '0.0.0.0'
                WHEN family(p_addr) = 6 THEN network(set_masklen(p_addr, 64))::inet
                ELSE host(p_addr)::inet END;
$$;
COMMENT ON FUNCTION nexus._signin_addr(inet) IS 'The address the throttle counts: an IPv4 address, or an IPv6 address''s /64.';

CREATE OR REPLACE FUNCTION nexus._signin_trusted(p_username text, p_device_hash bytea)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_device_hash IS NOT NULL AND EXISTS (
        SELECT 1 FROM nexus.signin_devices d
         WHERE d.token_hash = p_device_hash AND d.username = p_username AND d.expires_at > now());
$$;
COMMENT ON FUNCTION nexus._signin_trusted(text, bytea) IS 'True when the browser''s cookie is known for this user.';

CREATE OR REPLACE FUNCTION nexus._signin_wait(p_username text, p_addr inet, p_device_hash bytea)
RETURNS TABLE (retry_after_s int, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- a key is held back until its limit-th newest failure in the window is out of the window
    WITH recent AS (
        SELECT f.* FROM nexus.signin_failures f
         WHERE f.at > now() - interval '15 minutes' AND (f.username = p_username OR f.addr = p_addr)
    ), trusted AS (
        SELECT nexus._signin_trusted(p_username, p_device_hash) AS yes
    ), keys (reason, lim, at) AS (
        SELECT 'browser', 5, (SELECT r.at FROM recent r WHERE r.username = p_username AND r.device_hash = p_device_hash
                               ORDER BY r.at DESC OFFSET 4 LIMIT 1)
         WHERE (SELECT yes FROM trusted)
        UNION ALL
        SELECT 'user_address', 5, (SELECT r.at FROM recent r WHERE r.username = p_username AND r.addr = p_addr
                                    ORDER BY r.at DESC OFFSET 4 LIMIT 1)
         WHERE NOT (SELECT yes FROM trusted)
        UNION ALL
        SELECT 'address', 20, (SELECT r.at FROM recent r WHERE r.addr = p_addr ORDER BY r.at DESC OFFSET 19 LIMIT 1)
         WHERE NOT (SELECT yes FROM trusted)
        UNION ALL
        SELECT 'user', 20, (SELECT r.at FROM recent r WHERE r.username = p_username ORDER BY r.at DESC OFFSET 19 LIMIT 1)
         WHERE NOT (SELECT yes FROM trusted)
    )
    SELECT greatest(1, ceil(extract(epoch FROM k.at + interval '15 minutes' - now())))::int, k.reason
      FROM keys k WHERE k.at IS NOT NULL
     ORDER BY k.at DESC LIMIT 1;
$$;
COMMENT ON FUNCTION nexus._signin_wait(text, inet, bytea) IS
    'Why and for how many seconds a sign-in of this name, address and browser is held back; no row: it may try.';

CREATE OR REPLACE FUNCTION nexus.login_params(p_username text, p_client_addr inet, p_device_hash bytea DEFAULT NULL)
RETURNS TABLE (status text, retry_after_s int, reason text, salt bytea, n int, r int, p int, dklen int)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w record;
BEGIN
    SELECT * INTO w FROM nexus._signin_wait(left(coalesce(p_username, ''), 64), nexus._signin_addr(p_client_addr),
                                            p_device_hash);
    IF FOUND THEN
        RETURN QUERY SELECT 'throttled'::text, w.retry_after_s, w.reason, NULL::bytea, NULL::int, NULL::int, NULL::int,
                            NULL::int;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'ok'::text, 0, NULL::text, x.salt, x.n, x.r, x.p, length(x.dk)
                   FROM nexus._password_parts(p_username) x;
END;
$$;
COMMENT ON FUNCTION nexus.login_params(text, inet, bytea) IS
    'Salt and scrypt parameters to derive a sign-in key with (stand-ins for an unknown name), or throttled and for how long.';

CREATE OR REPLACE FUNCTION nexus.sign_in(p_username text, p_key bytea, p_session_hash bytea, p_csrf text, p_ttl_s int,
                                         p_client_addr inet, p_device_hash bytea DEFAULT NULL,
                                         p_new_device_hash bytea DEFAULT NULL)
RETURNS TABLE (status text, retry_after_s int, reason text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := left(coalesce(p_username, ''), 64);
    v_addr inet := nexus._signin_addr(p_client_addr);
    v_trusted boolean;
    w record;
    x record;
BEGIN
    -- one attempt at a time per name and per address (always in this order), so concurrent guesses
    -- cannot all pass the check before any failure is recorded
    PERFORM pg_advisory_xact_lock(hashtextextended('nexus.sign_in name ' || v_name, 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('nexus.sign_in addr ' || host(v_addr), 0));
    SELECT * INTO w FROM nexus._signin_wait(v_name, v_addr, p_device_hash);
    IF FOUND THEN
        RETURN QUERY SELECT 'throttled'::text, w.retry_after_s, w.reason;
        RETURN;
    END IF;
    SELECT * INTO x FROM nexus._password_parts(p_username);
    -- compare digests of both sides: the time taken tells nothing about the stored key
    IF NOT (x.known AND sha256(coalesce(p_key, '\x'::bytea)) = sha256(x.dk)) THEN
        v_trusted := nexus._signin_trusted(v_name, p_device_hash);
        INSERT INTO nexus.signin_failures (username, addr, device_hash)
        VALUES (v_name, v_addr, CASE WHEN v_trusted THEN p_device_hash END);
        DELETE FROM nexus.signin_failures f WHERE f.at < now() - interval '15 minutes';
        RETURN QUERY SELECT 'wrong'::text, 0, NULL::text;
        RETURN;
    END IF;
    DELETE FROM nexus.sessions s WHERE s.expires_at < now();
    INSERT INTO nexus.sessions (token_hash, username, csrf, expires_at)
    VALUES (p_session_hash, p_username, p_csrf, now() + make_interval(secs => p_ttl_s));
    -- the user's own slips from here are forgiven; failures for other names, or from elsewhere, stay
    DELETE FROM nexus.signin_failures f
     WHERE f.username = v_name AND (f.addr = v_addr OR f.device_hash = p_device_hash);
    -- the browser gets a new token (an old or planted one is not kept); expired browsers go
    DELETE FROM nexus.signin_devices d
     WHERE d.expires_at < now() OR (d.username = p_username AND d.token_hash = p_device_hash);
    IF p_new_device_hash IS NOT NULL THEN
        INSERT INTO nexus.signin_devices (token_hash, username, expires_at)
        VALUES (p_new_device_hash, p_username, now() + interval '90 days')
        ON CONFLICT (token_hash, username) DO UPDATE SET expires_at = EXCLUDED.expires_at;
    END IF;
    RETURN QUERY SELECT 'signed_in'::text, 0, NULL::text;
END;
$$;
COMMENT ON FUNCTION nexus.sign_in(text, bytea, bytea, text, int, inet, bytea, bytea) IS
    'Compares a derived key with the user''s and, when it matches, starts the session and remembers the browser: '
    'signed_in, wrong (recorded for the throttle) or throttled (with retry_after_s and the reason).';

CREATE OR REPLACE FUNCTION nexus.signin_unblock(p_username text, p_addr inet DEFAULT NULL)
RETURNS int
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM nexus.signin_failures f
                WHERE (p_username IS NOT NULL OR p_addr IS NOT NULL)
                  AND (p_username IS NULL OR f.username = p_username)
                  AND (p_addr IS NULL OR f.addr = nexus._signin_addr(p_addr))
               RETURNING 1)
    SELECT count(*)::int FROM d;
$$;
COMMENT ON FUNCTION nexus.signin_unblock(text, inet) IS
    'Forgets the failed sign-ins of a user name and/or an address (operator only); returns how many.';

CREATE OR REPLACE FUNCTION nexus.session_get(p_token_hash bytea)
RETURNS TABLE (username text, csrf text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.username, s.csrf FROM nexus.sessions s WHERE s.token_hash = p_token_hash AND s.expires_at > now();
$$;
COMMENT ON FUNCTION nexus.session_get(bytea) IS 'The user and CSRF token of a live session, or nothing.';

CREATE OR REPLACE FUNCTION nexus.session_page(p_token_hash bytea)
RETURNS TABLE (username text, csrf text, flash text)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH s AS (
        SELECT s.token_hash, s.username, s.csrf, s.flash FROM nexus.sessions s
         WHERE s.token_hash = p_token_hash AND s.expires_at > now()
    ), shown AS (
        UPDATE nexus.sessions x SET flash = NULL FROM s WHERE x.token_hash = s.token_hash AND s.flash IS NOT NULL
    )
    SELECT s.username, s.csrf, s.flash FROM s;
$$;
COMMENT ON FUNCTION nexus.session_page(bytea) IS
    'A live session for a page: user, CSRF token and the pending notice (which is then cleared).';

CREATE OR REPLACE FUNCTION nexus.session_flash(p_token_hash bytea, p_text text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE nexus.sessions s SET flash = left(p_text, 500) WHERE s.token_hash = p_token_hash AND s.expires_at > now();
$$;
COMMENT ON FUNCTION nexus.session_flash(bytea, text) IS 'Leaves a notice (server text) for the next page of a session.';

CREATE OR REPLACE FUNCTION nexus.session_delete(p_token_hash bytea)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM nexus.sessions s WHERE s.token_hash = p_token_hash;
$$;
COMMENT ON FUNCTION nexus.session_delete(bytea) IS 'Signs a session out.';
