-- Definer audit of shared_queue: every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp, is
-- owned by a non-superuser (outside the allow-list below, each with its reason), and is not
-- executable by PUBLIC; see tests/sql/_shared/definer_audit.sql.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../_shared/definer_setup.sql
INSERT INTO definer_allow VALUES
    ('partman.check_epoch_type(p_type text)', 'pg_partman''s own (extension member): an IMMUTABLE check of its text argument, pinned by pg_partman; EXECUTE only for own_shared_queue'),
    ('partman.check_partition_type(p_type text)', 'pg_partman''s own (extension member): an IMMUTABLE check of its text argument, pinned by pg_partman; EXECUTE only for own_shared_queue'),
    ('partman.check_name_length(p_object_name text, p_suffix text, p_table_partition boolean)', 'pg_partman''s own (extension member): an IMMUTABLE check of its arguments, pinned by pg_partman; EXECUTE only for own_shared_queue');

\ir ../_shared/definer_audit.sql
SELECT * FROM finish();
ROLLBACK;
