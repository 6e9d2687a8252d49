-- Definer audit of nexus: every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp, is
-- owned by a non-superuser (outside the allow-list below, each with its reason), and is not
-- executable by PUBLIC; see tests/sql/_shared/definer_audit.sql.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../_shared/definer_setup.sql
-- no superuser-owned definer is allowed here
\ir ../_shared/definer_audit.sql
SELECT * FROM finish();
ROLLBACK;
