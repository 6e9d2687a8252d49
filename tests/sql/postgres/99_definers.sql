-- Definer audit of postgres: every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp, is
-- owned by a non-superuser (outside the allow-list below, each with its reason), and is not
-- executable by PUBLIC; see tests/sql/_shared/definer_audit.sql.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE TEMP TABLE definer_allow (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE definer_todo (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
INSERT INTO definer_allow VALUES
    ('extensions.dblink_connect_u(text)', 'dblink''s own C function (extension member); EXECUTE only for the superuser'),
    ('extensions.dblink_connect_u(text, text)', 'dblink''s own C function (extension member); EXECUTE only for the superuser');

\ir ../_shared/definer_audit.sql
SELECT * FROM finish();
ROLLBACK;
