-- Superuser part of every Singularity database (the default one and each instance), run by
-- `orchestrator migrate` before the owner's migrations, on a connection whose search_path is
-- pg_catalog, pg_temp (db.superuser_conn). Idempotent.
-- 1. the CDC slot (must come first: a slot cannot be created after this transaction wrote anything);
-- 2. dblink, in schema extensions (_common.sql);
-- 3. the two NOLOGIN roles that own this database's SECURITY DEFINER functions, each with only what
--    its functions need (no superuser owns a definer here; docs/singularity.md "Who runs vault and cdc"):
--      singularity_vault  EXECUTE on pg_read_file: reads the key file (vault.encrypt, vault.decrypt);
--      singularity_cdc    REPLICATION: reads and advances the logical slot (cdc.changes, cdc.lag, cdc.skip);
-- 4. the key file, created here when missing; written only by superuser SQL (vault._create_key_file()
--    here, vault.rotate_key() from `orchestrator instance rotate-key`), never by a function another
--    role may call;
-- 5. the service role never logs bind parameters (a session state sent as $1 stays out of the log).
DO $$
DECLARE
    slot text := 'cdc_' || pg_catalog.current_database();
    st   text;
BEGIN
    SELECT s.wal_status INTO st FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = slot;
    IF st = 'lost' THEN
        PERFORM pg_catalog.pg_drop_replication_slot(slot);   -- fell past max_slot_wal_keep_size: start over
        st := NULL;
    END IF;
    IF st IS NULL AND pg_catalog.current_setting('wal_level') = 'logical' THEN
        PERFORM pg_catalog.pg_create_logical_replication_slot(slot, 'wal2json');
    END IF;
END $$;

CREATE EXTENSION IF NOT EXISTS dblink SCHEMA extensions;

-- The roles (cluster-wide; every Singularity database uses the same two). NOLOGIN, nobody is a member
-- of them and they are members of nothing: only the functions they own ever act as them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'singularity_vault') THEN
        CREATE ROLE singularity_vault;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'singularity_cdc') THEN
        CREATE ROLE singularity_cdc;
    END IF;
END $$;
ALTER ROLE singularity_vault NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
ALTER ROLE singularity_cdc NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT REPLICATION NOBYPASSRLS;
COMMENT ON ROLE singularity_vault IS 'Owns vault.encrypt/decrypt: may read files under the data directory (pg_read_file), nothing else.';
COMMENT ON ROLE singularity_cdc IS 'Owns cdc.*: REPLICATION (logical slot functions), nothing else.';

CREATE SCHEMA IF NOT EXISTS vault;
COMMENT ON SCHEMA vault IS 'Session-state encryption: the key file is read only inside the definers owned by singularity_vault.';
CREATE SCHEMA IF NOT EXISTS cdc;
COMMENT ON SCHEMA cdc IS 'Change data capture through the wal2json slot cdc_<database> (definers owned by singularity_cdc).';
REVOKE ALL ON SCHEMA vault, cdc FROM PUBLIC;
GRANT USAGE ON SCHEMA vault TO singularity_vault;
GRANT USAGE ON SCHEMA extensions TO singularity_vault;   -- pgcrypto
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_file(text, bigint, bigint, boolean) TO singularity_vault;
GRANT USAGE ON SCHEMA cdc TO singularity_cdc;

-- The key file of this database, relative to the data directory (only the server's OS user reads it).
CREATE OR REPLACE FUNCTION vault._key_file()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN 'singularity_' || pg_catalog.current_database() || '.keys';

-- Shell command that (re)writes the key file from stdin, readable by the server's OS user only.
-- Superuser only (it reads data_directory; COPY TO PROGRAM needs a superuser anyway).
CREATE OR REPLACE FUNCTION vault._write_cmd()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.format('umask 077 && cat > ''%s.tmp'' && mv ''%s.tmp'' ''%s''',
              pg_catalog.replace(pg_catalog.current_setting('data_directory') || '/' || vault._key_file(), '''', ''),
              pg_catalog.replace(pg_catalog.current_setting('data_directory') || '/' || vault._key_file(), '''', ''),
              pg_catalog.replace(pg_catalog.current_setting('data_directory') || '/' || vault._key_file(), '''', ''));

-- All keys as (key_id, key). Read only: the file is created by migrate (vault._create_key_file()).
-- Owned by singularity_vault; callable by it (inside vault.encrypt/decrypt) and by superusers.
CREATE OR REPLACE FUNCTION vault._keys()
RETURNS TABLE (key_id int, key text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    txt text := pg_catalog.pg_read_file(vault._key_file(), 0, 1000000, true);
BEGIN
    IF txt IS NULL THEN
        RAISE EXCEPTION 'the session key file % of this database is missing', vault._key_file()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run `orchestrator migrate` (it creates the file); if sessions were written before, '
                         'restore the file from the backup that has it first.';
    END IF;
    RETURN QUERY
        SELECT pg_catalog.split_part(l, ':', 1)::int, pg_catalog.split_part(l, ':', 2)
          FROM pg_catalog.unnest(pg_catalog.string_to_array(pg_catalog.btrim(txt), E'\n')) AS l WHERE l <> '';
END;
$$;

-- Creates the key file with key 1 when it is missing; true when it did. Superuser SQL: migrate runs it.
CREATE OR REPLACE FUNCTION vault._create_key_file()
RETURNS boolean LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'only a superuser writes the session key file' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_catalog.pg_read_file(vault._key_file(), 0, 1, true) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format(
        $c$COPY (SELECT '1:' || pg_catalog.encode(extensions.gen_random_bytes(32), 'hex')) TO PROGRAM %L$c$,
        vault._write_cmd());
    RETURN true;
END;
$$;

-- Adds a new key (the next id) to the key file; new sessions are encrypted with it. Returns its id.
-- Superuser SQL (`orchestrator instance rotate-key`); the keys go from the file to the file inside
-- the server, never through SQL text.
CREATE OR REPLACE FUNCTION vault.rotate_key()
RETURNS int LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    next_id int;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'only a superuser writes the session key file' USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('vault.rotate_key'));
    SELECT coalesce(max(pg_catalog.split_part(l, ':', 1)::int), 0) + 1 INTO next_id
      FROM pg_catalog.unnest(pg_catalog.string_to_array(pg_catalog.btrim(
               pg_catalog.pg_read_file(vault._key_file())), E'\n')) AS l WHERE l <> '';
    EXECUTE pg_catalog.format(
        $c$COPY (SELECT l FROM pg_catalog.unnest(pg_catalog.string_to_array(pg_catalog.btrim(
                                   pg_catalog.pg_read_file(%L)), E'\n')) AS l WHERE l <> ''
                 UNION ALL SELECT %s || ':' || pg_catalog.encode(extensions.gen_random_bytes(32), 'hex')) TO PROGRAM %L$c$,
        vault._key_file(), next_id, vault._write_cmd());
    RETURN next_id;
END;
$$;

-- Encrypts STATE with the newest key: (key_id, ciphertext). Service roles may call it (encrypt only).
CREATE OR REPLACE FUNCTION vault.encrypt(p_state jsonb, OUT key_id int, OUT ciphertext bytea)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    SELECT v.key_id, v.key INTO key_id, k FROM vault._keys() v ORDER BY v.key_id DESC LIMIT 1;
    IF k IS NULL THEN
        RAISE EXCEPTION 'the session key file % of this database has no key', vault._key_file()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Restore the key file from a backup, or remove the empty file and run `orchestrator migrate`.';
    END IF;
    ciphertext := extensions.pgp_sym_encrypt(p_state::text, k, 'cipher-algo=aes256');
END;
$$;

-- Decrypts CIPHERTEXT written with key KEY_ID. Granted to the database owner role only.
CREATE OR REPLACE FUNCTION vault.decrypt(p_key_id int, p_ciphertext bytea)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    RETURN extensions.pgp_sym_decrypt(p_ciphertext, k)::jsonb;
END;
$$;

-- Changes since the last consume, from the wal2json slot (format 2: one row per change).
-- P_TABLES filters (e.g. '{core.learned_patterns}'); P_CONSUME advances the slot (up to P_LIMIT changes).
CREATE OR REPLACE FUNCTION cdc.changes(p_consume boolean DEFAULT false, p_tables text[] DEFAULT NULL,
                                       p_limit int DEFAULT 10000)
RETURNS TABLE (lsn pg_lsn, xid xid, change jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    slot text := 'cdc_' || pg_catalog.current_database();
    opts text[] := ARRAY['format-version', '2', 'include-timestamp', 'true', 'include-transaction', 'false'];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = slot AND s.wal_status <> 'lost') THEN
        RAISE EXCEPTION 'CDC slot % is missing or lost (it fell behind max_slot_wal_keep_size)', slot
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run `orchestrator migrate` to recreate it, then read it regularly (orchestrator autonomous cdc).';
    END IF;
    IF p_tables IS NOT NULL THEN
        opts := opts || ARRAY['add-tables', pg_catalog.array_to_string(p_tables, ',')];
    END IF;
    IF p_consume THEN
        RETURN QUERY SELECT c.lsn, c.xid, c.data::jsonb
                       FROM pg_catalog.pg_logical_slot_get_changes(slot, NULL, p_limit, VARIADIC opts) c;
    ELSE
        RETURN QUERY SELECT c.lsn, c.xid, c.data::jsonb
                       FROM pg_catalog.pg_logical_slot_peek_changes(slot, NULL, p_limit, VARIADIC opts) c;
    END IF;
END;
$$;

-- How far the slot is behind: bytes of WAL it pins and its wal_status.
CREATE OR REPLACE FUNCTION cdc.lag()
RETURNS TABLE (slot_name name, wal_status text, behind_bytes numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.slot_name, s.wal_status, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)
      FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = 'cdc_' || pg_catalog.current_database();
$$;

-- Moves the slot to the current WAL position, discarding unread changes (after a bulk load).
CREATE OR REPLACE FUNCTION cdc.skip()
RETURNS pg_lsn LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.end_lsn FROM pg_catalog.pg_replication_slot_advance('cdc_' || pg_catalog.current_database(),
                                                                 pg_catalog.pg_current_wal_lsn()) a;
$$;

-- Owners: the definers belong to the two roles above; the file writers and helpers stay the superuser's.
ALTER FUNCTION vault._keys() OWNER TO singularity_vault;
ALTER FUNCTION vault.encrypt(jsonb) OWNER TO singularity_vault;
ALTER FUNCTION vault.decrypt(int, bytea) OWNER TO singularity_vault;
ALTER FUNCTION cdc.changes(boolean, text[], int) OWNER TO singularity_cdc;
ALTER FUNCTION cdc.lag() OWNER TO singularity_cdc;
ALTER FUNCTION cdc.skip() OWNER TO singularity_cdc;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA vault, cdc FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault._key_file() TO singularity_vault;

-- Grants to this database's roles: its owner (own_singularity) and svc_singularity[_<instance>].
DO $$
DECLARE
    owner_ name := (SELECT pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d
                     WHERE d.datname = pg_catalog.current_database());
    svc    name := 'svc_' || pg_catalog.current_database();
BEGIN
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA vault, cdc TO %I', owner_);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION vault.encrypt(jsonb), vault.decrypt(int, bytea),
                    cdc.changes(boolean, text[], int), cdc.lag(), cdc.skip() TO %I', owner_);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = svc) THEN
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA vault, cdc TO %I', svc);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION vault.encrypt(jsonb), cdc.changes(boolean, text[], int),
                    cdc.lag() TO %I', svc);
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I SET log_parameter_max_length = 0', svc,
                                  pg_catalog.current_database());
    END IF;
END $$;

SELECT vault._create_key_file();   -- the key file now rather than on the first session
