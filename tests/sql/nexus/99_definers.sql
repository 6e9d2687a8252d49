-- Definer audit of nexus: every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp, is
-- owned by a non-superuser (outside the allow-list below, each with its reason), and is not
-- executable by PUBLIC; see tests/sql/_shared/definer_audit.sql.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE TEMP TABLE definer_allow (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE definer_todo (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
-- no superuser-owned definer is allowed here
\ir ../_shared/definer_audit.sql
SELECT * FROM finish();
ROLLBACK;
