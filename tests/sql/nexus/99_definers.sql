-- Definer audit of nexus: every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp, is
-- owned by a non-superuser (outside the allow-list below, each with its reason), and is not
-- executable by PUBLIC; see tests/sql/_shared/definer_audit.sql.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE TEMP TABLE definer_allow (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE definer_todo (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
-- no superuser-owned definer is allowed here
-- sql/procedures/nexus/30_web.sql belongs to the web branch, which pins these itself
INSERT INTO definer_todo VALUES
    ('nexus.user_hash(p_username text)', 'pinned on the web branch (nexus/30_web.sql)'),
    ('nexus.session_create(p_token_hash bytea, p_username text, p_csrf text, p_ttl_s integer)', 'pinned on the web branch (nexus/30_web.sql)'),
    ('nexus.session_get(p_token_hash bytea)', 'pinned on the web branch (nexus/30_web.sql)'),
    ('nexus.session_delete(p_token_hash bytea)', 'pinned on the web branch (nexus/30_web.sql)');
\ir ../_shared/definer_audit.sql
SELECT * FROM finish();
ROLLBACK;
