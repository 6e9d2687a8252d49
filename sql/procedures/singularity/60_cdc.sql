-- CDC through the wal2json slot cdc_<database> (created by sql/bootstrap/singularity.sql).
-- Peek variants leave changes in the slot; P_CONSUME => true advances it. Consuming with a table
-- filter also discards the other tables' changes up to that point (one slot per database).

-- All changes (format-version 2 rows: action I/U/D, schema, table, columns, identity).
CREATE OR REPLACE FUNCTION core.get_cdc_changes(p_consume boolean DEFAULT false, p_limit int DEFAULT 1000)
RETURNS TABLE (lsn pg_lsn, change jsonb) LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.lsn, c.change FROM cdc.changes(p_consume, NULL, p_limit) c WHERE c.change->>'action' IN ('I', 'U', 'D') $$;
COMMENT ON FUNCTION core.get_cdc_changes(boolean, int) IS 'Row changes of this database from the CDC slot (peek by default).';

-- Changes of core.learned_patterns only.
CREATE OR REPLACE FUNCTION core.get_pattern_changes(p_consume boolean DEFAULT false, p_limit int DEFAULT 1000)
RETURNS TABLE (lsn pg_lsn, change jsonb) LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.lsn, c.change FROM cdc.changes(p_consume, '{core.learned_patterns}', p_limit) c
       WHERE c.change->>'action' IN ('I', 'U', 'D') $$;
COMMENT ON FUNCTION core.get_pattern_changes(boolean, int) IS 'learned_patterns changes from the CDC slot.';

-- Changes of core.agent_sessions only (the state is ciphertext there too).
CREATE OR REPLACE FUNCTION core.get_session_changes(p_consume boolean DEFAULT false, p_limit int DEFAULT 1000)
RETURNS TABLE (lsn pg_lsn, change jsonb) LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.lsn, c.change FROM cdc.changes(p_consume, '{core.agent_sessions}', p_limit) c
       WHERE c.change->>'action' IN ('I', 'U', 'D') $$;
COMMENT ON FUNCTION core.get_session_changes(boolean, int) IS 'agent_sessions changes from the CDC slot.';
