-- Sign-in for the HITL page: users (scrypt hashes made in Python), sessions with CSRF tokens.

CREATE OR REPLACE FUNCTION nexus.user_set(p_username text, p_password_hash text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, nexus
AS $$
    INSERT INTO nexus.users AS u (username, password_hash) VALUES (p_username, p_password_hash)
    ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash;
$$;
COMMENT ON FUNCTION nexus.user_set(text, text) IS 'Adds a user or changes their password hash (operator only).';

CREATE OR REPLACE FUNCTION nexus.user_remove(p_username text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, nexus
AS $$
    WITH d AS (DELETE FROM nexus.users WHERE username = p_username RETURNING 1) SELECT EXISTS (SELECT 1 FROM d);
$$;
COMMENT ON FUNCTION nexus.user_remove(text) IS 'Removes a user and their sessions (operator only).';

CREATE OR REPLACE FUNCTION nexus.user_hash(p_username text)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, nexus
AS $$
    SELECT password_hash FROM nexus.users WHERE username = p_username;
$$;
COMMENT ON FUNCTION nexus.user_hash(text) IS 'The stored password hash of a user (the page verifies it), or NULL.';

CREATE OR REPLACE FUNCTION nexus.session_create(p_token_hash bytea, p_username text, p_csrf text, p_ttl_s int)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, nexus
AS $$
    DELETE FROM nexus.sessions WHERE expires_at < now();
    INSERT INTO nexus.sessions (token_hash, username, csrf, expires_at)
    VALUES (p_token_hash, p_username, p_csrf, now() + make_interval(secs => p_ttl_s));
$$;
COMMENT ON FUNCTION nexus.session_create(bytea, text, text, int) IS 'Starts a session (and drops expired ones).';

CREATE OR REPLACE FUNCTION nexus.session_get(p_token_hash bytea)
RETURNS TABLE (username text, csrf text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, nexus
AS $$
    SELECT s.username, s.csrf FROM nexus.sessions s WHERE s.token_hash = p_token_hash AND s.expires_at > now();
$$;
COMMENT ON FUNCTION nexus.session_get(bytea) IS 'The user and CSRF token of a live session, or nothing.';

CREATE OR REPLACE FUNCTION nexus.session_delete(p_token_hash bytea)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, nexus
AS $$
    DELETE FROM nexus.sessions WHERE token_hash = p_token_hash;
$$;
COMMENT ON FUNCTION nexus.session_delete(bytea) IS 'Signs a session out.';
