-- Superuser part of every Singularity database (the default one and each instance), run by
-- `orchestrator migrate` before the owner's migrations. Idempotent.
-- 1. the CDC slot (must come first: a slot cannot be created after this transaction wrote anything);
-- 2. dblink; 3. the session-state key file and the SECURITY DEFINER functions that alone read it;
-- 4. the service role never logs bind parameters (a session state sent as $1 stays out of the log).
DO $$
DECLARE
    slot text := 'cdc_' || current_database();
    st   text;
BEGIN
    SELECT wal_status INTO st FROM pg_replication_slots WHERE slot_name = slot;
    IF st = 'lost' THEN
        PERFORM pg_drop_replication_slot(slot);   -- fell past max_slot_wal_keep_size: start over
        st := NULL;
    END IF;
    IF st IS NULL AND current_setting('wal_level') = 'logical' THEN
        PERFORM pg_create_logical_replication_slot(slot, 'wal2json');
    END IF;
END $$;

CREATE EXTENSION IF NOT EXISTS dblink;

CREATE SCHEMA IF NOT EXISTS vault;
COMMENT ON SCHEMA vault IS 'Session-state encryption: the key file is read only inside these superuser-owned functions.';
CREATE SCHEMA IF NOT EXISTS cdc;
COMMENT ON SCHEMA cdc IS 'Change data capture through the wal2json slot cdc_<database>.';
REVOKE ALL ON SCHEMA vault, cdc FROM PUBLIC;

-- The key file of this database, relative to the data directory (only the server's OS user reads it).
CREATE OR REPLACE FUNCTION vault._key_file()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog
RETURN 'singularity_' || current_database() || '.keys';

-- Shell command that (re)writes the key file from stdin, readable by the server's OS user only.
CREATE OR REPLACE FUNCTION vault._write_cmd()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog
RETURN format('umask 077 && cat > ''%s.tmp'' && mv ''%s.tmp'' ''%s''',
              replace(current_setting('data_directory') || '/' || vault._key_file(), '''', ''),
              replace(current_setting('data_directory') || '/' || vault._key_file(), '''', ''),
              replace(current_setting('data_directory') || '/' || vault._key_file(), '''', ''));

-- All keys as (key_id, key); creates the file with key 1 when missing. Never exposed to roles.
CREATE OR REPLACE FUNCTION vault._keys()
RETURNS TABLE (key_id int, key text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public
AS $$
DECLARE
    txt text := pg_read_file(vault._key_file(), 0, 1000000, true);
BEGIN
    IF txt IS NULL THEN
        EXECUTE format($c$COPY (SELECT '1:' || encode(gen_random_bytes(32), 'hex')) TO PROGRAM %L$c$,
                       vault._write_cmd());
        txt := pg_read_file(vault._key_file());
    END IF;
    RETURN QUERY
        SELECT split_part(l, ':', 1)::int, split_part(l, ':', 2)
          FROM unnest(string_to_array(trim(txt), E'\n')) AS l WHERE l <> '';
END;
$$;

-- Adds a new key (the next id) to the key file; new sessions are encrypted with it. Returns its id.
CREATE OR REPLACE FUNCTION vault.rotate_key()
RETURNS int LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public
AS $$
DECLARE
    next_id int;
BEGIN
    SELECT max(key_id) + 1 INTO next_id FROM vault._keys();
    EXECUTE format($c$COPY (SELECT key_id || ':' || key FROM vault._keys()
                            UNION ALL SELECT %s || ':' || encode(gen_random_bytes(32), 'hex')) TO PROGRAM %L$c$,
                   next_id, vault._write_cmd());
    RETURN next_id;
END;
$$;

-- Encrypts STATE with the newest key: (key_id, ciphertext). Service roles may call it (encrypt only).
CREATE OR REPLACE FUNCTION vault.encrypt(p_state jsonb, OUT key_id int, OUT ciphertext bytea)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    k text;
BEGIN
    SELECT v.key_id, v.key INTO key_id, k FROM vault._keys() v ORDER BY v.key_id DESC LIMIT 1;
    ciphertext := pgp_sym_encrypt(p_state::text, k, 'cipher-algo=aes256');
END;
$$;

-- Decrypts CIPHERTEXT written with key KEY_ID. Granted to the database owner role only.
CREATE OR REPLACE FUNCTION vault.decrypt(p_key_id int, p_ciphertext bytea)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    k text;
BEGIN
    SELECT v.key INTO k FROM vault._keys() v WHERE v.key_id = p_key_id;
    IF k IS NULL THEN
        RAISE EXCEPTION 'no session key with id % in the key file', p_key_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The key file lost a key (restored from an old backup?): restore the file that has it.';
    END IF;
    RETURN pgp_sym_decrypt(p_ciphertext, k)::jsonb;
END;
$$;

-- Changes since the last consume, from the wal2json slot (format 2: one row per change).
-- P_TABLES filters (e.g. '{core.learned_patterns}'); P_CONSUME advances the slot (up to P_LIMIT changes).
CREATE OR REPLACE FUNCTION cdc.changes(p_consume boolean DEFAULT false, p_tables text[] DEFAULT NULL,
                                       p_limit int DEFAULT 10000)
RETURNS TABLE (lsn pg_lsn, xid xid, change jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
    slot text := 'cdc_' || current_database();
    opts text[] := ARRAY['format-version', '2', 'include-timestamp', 'true', 'include-transaction', 'false'];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = slot AND wal_status <> 'lost') THEN
        RAISE EXCEPTION 'CDC slot % is missing or lost (it fell behind max_slot_wal_keep_size)', slot
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run `orchestrator migrate` to recreate it, then read it regularly (orchestrator autonomous cdc).';
    END IF;
    IF p_tables IS NOT NULL THEN
        opts := opts || ARRAY['add-tables', array_to_string(p_tables, ',')];
    END IF;
    IF p_consume THEN
        RETURN QUERY SELECT c.lsn, c.xid, c.data::jsonb
                       FROM pg_logical_slot_get_changes(slot, NULL, p_limit, VARIADIC opts) c;
    ELSE
        RETURN QUERY SELECT c.lsn, c.xid, c.data::jsonb
                       FROM pg_logical_slot_peek_changes(slot, NULL, p_limit, VARIADIC opts) c;
    END IF;
END;
$$;

-- How far the slot is behind: bytes of WAL it pins and its wal_status.
CREATE OR REPLACE FUNCTION cdc.lag()
RETURNS TABLE (slot_name name, wal_status text, behind_bytes numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    SELECT slot_name, wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)
      FROM pg_replication_slots WHERE slot_name = 'cdc_' || current_database();
$$;

-- Moves the slot to the current WAL position, discarding unread changes (after a bulk load).
CREATE OR REPLACE FUNCTION cdc.skip()
RETURNS pg_lsn LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    SELECT end_lsn FROM pg_replication_slot_advance('cdc_' || current_database(), pg_current_wal_lsn());
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA vault, cdc FROM PUBLIC;

-- Grants to this database's roles: own_singularity (owner) and svc_singularity[_<instance>].
DO $$
DECLARE
    owner_ name := (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database());
    svc    name := 'svc_' || current_database();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA vault, cdc TO %I', owner_);
    EXECUTE format('GRANT EXECUTE ON FUNCTION vault.encrypt(jsonb), vault.decrypt(int, bytea), cdc.changes(boolean, text[], int),
                    cdc.lag(), cdc.skip() TO %I', owner_);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = svc) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA vault, cdc TO %I', svc);
        EXECUTE format('GRANT EXECUTE ON FUNCTION vault.encrypt(jsonb), cdc.changes(boolean, text[], int), cdc.lag() TO %I', svc);
        EXECUTE format('ALTER ROLE %I IN DATABASE %I SET log_parameter_max_length = 0', svc, current_database());
    END IF;
    PERFORM vault._keys();   -- create the key file now rather than on the first session
END $$;
