-- The owner role (own_singularity) may not become a superuser through the vault and cdc definers:
-- a temp view named pg_replication_slots (cdc.lag, cdc.changes), a public schema of its own with a
-- fake pgp_sym_decrypt/encrypt (vault.decrypt, vault.encrypt). Whatever would run there reports
-- itself in the setting t.loot; nothing may. The roles behind vault and cdc can do only their job.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(20);

-- 1. cdc: a temp view pg_replication_slots calling the owner's own function ----------------------
SET LOCAL ROLE own_singularity;
CREATE FUNCTION public.t_loot(p_where text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    BEGIN
        k := left(pg_catalog.pg_read_file('singularity_' || current_database() || '.keys', 0, 1000, true), 8);
    EXCEPTION WHEN insufficient_privilege THEN
        k := 'denied';
    END;
    PERFORM pg_catalog.set_config('t.loot', coalesce(pg_catalog.current_setting('t.loot', true), '')
                                  || format(' %s ran as %s, key: %s;', p_where, current_user, k), true);
    RETURN 'reserved';
END $$;
CREATE TEMP VIEW pg_replication_slots AS
    SELECT s.slot_name, public.t_loot('cdc') AS wal_status, s.restart_lsn FROM pg_catalog.pg_replication_slots s;
SELECT count(*) AS lag_rows FROM cdc.lag() \gset
SELECT count(*) AS peeked FROM cdc.changes(false, NULL, 1) \gset
RESET ROLE;
DROP VIEW pg_temp.pg_replication_slots;

SELECT is(coalesce(current_setting('t.loot', true), ''), '',
          'cdc.lag() and cdc.changes() read pg_catalog.pg_replication_slots, never a temp view the owner planted');
SELECT is(:lag_rows, 1, 'cdc.lag() still reports the slot');
SELECT ok((SELECT NOT r.rolsuper FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
            WHERE p.oid = 'cdc.lag()'::regprocedure),
          'cdc.lag() runs as a role that is not a superuser');
SELECT ok((SELECT NOT r.rolsuper FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
            WHERE p.oid = 'cdc.changes(boolean, text[], int)'::regprocedure),
          'cdc.changes() runs as a role that is not a superuser');

SELECT set_config('t.loot', '', true) AS reset_loot \gset
-- 2. vault: the owner renames public (it owns it) and makes its own with fake pgcrypto functions --
INSERT INTO core.agents (id) VALUES ('esc1') ON CONFLICT DO NOTHING;
SET LOCAL ROLE own_singularity;
ALTER SCHEMA public RENAME TO t_public_real;
CREATE SCHEMA public;
CREATE FUNCTION public.pgp_sym_encrypt(text, text, text) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('t.loot', coalesce(pg_catalog.current_setting('t.loot', true), '')
                                  || format(' encrypt ran as %s, key: %s;', current_user, left($2, 8)), true);
    RETURN '\x00'::bytea;
END $$;
CREATE FUNCTION public.pgp_sym_decrypt(bytea, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('t.loot', coalesce(pg_catalog.current_setting('t.loot', true), '')
                                  || format(' decrypt ran as %s, key: %s;', current_user, left($2, 8)), true);
    RETURN '{}';
END $$;
-- (ids are ULIDs: a stand-in keeps code that looks gen_random_bytes up through public working)
CREATE FUNCTION public.gen_random_bytes(int) RETURNS bytea LANGUAGE sql
    RETURN substring(pg_catalog.decode(pg_catalog.md5(pg_catalog.random()::text), 'hex') FROM 1 FOR $1);
INSERT INTO core.agent_sessions (id, agent_id, state) VALUES ('esc-s1', 'esc1', '{"secret": "esc"}');
SELECT core.session_state('esc-s1') AS esc_state \gset
SELECT (vault.encrypt('{"x": 1}')).ciphertext IS NOT NULL AS enc_direct \gset
DROP FUNCTION public.pgp_sym_encrypt(text, text, text), public.pgp_sym_decrypt(bytea, text), public.gen_random_bytes(int);
DROP SCHEMA public;
ALTER SCHEMA t_public_real RENAME TO public;
RESET ROLE;

SELECT is(coalesce(current_setting('t.loot', true), ''), '',
          'vault.encrypt/vault.decrypt never call a pgp_sym_* of a public schema the owner replaced');
SELECT is(:'esc_state'::jsonb, '{"secret": "esc"}'::jsonb, 'the real pgcrypto encrypted and decrypted the session');
SELECT ok(:'enc_direct'::boolean, 'vault.encrypt called directly works too');
SELECT ok((SELECT NOT r.rolsuper FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
            WHERE p.oid = 'vault.decrypt(int, bytea)'::regprocedure),
          'vault.decrypt() runs as a role that is not a superuser');

-- 3. what the roles behind vault and cdc are, and what they cannot do -----------------------------
SELECT is((SELECT format('super=%s login=%s replication=%s createrole=%s createdb=%s bypassrls=%s',
                         rolsuper, rolcanlogin, rolreplication, rolcreaterole, rolcreatedb, rolbypassrls)
             FROM pg_catalog.pg_roles WHERE rolname = 'singularity_vault'),
          'super=f login=f replication=f createrole=f createdb=f bypassrls=f',
          'singularity_vault: NOLOGIN, no superuser, replication, createrole, createdb or bypassrls');
SELECT is((SELECT format('super=%s login=%s replication=%s createrole=%s createdb=%s bypassrls=%s',
                         rolsuper, rolcanlogin, rolreplication, rolcreaterole, rolcreatedb, rolbypassrls)
             FROM pg_catalog.pg_roles WHERE rolname = 'singularity_cdc'),
          'super=f login=f replication=t createrole=f createdb=f bypassrls=f',
          'singularity_cdc: NOLOGIN and REPLICATION only');
SELECT is((SELECT count(*)::int FROM pg_catalog.pg_auth_members m
            WHERE m.member IN ('singularity_vault'::regrole, 'singularity_cdc'::regrole)
               OR m.roleid IN ('singularity_vault'::regrole, 'singularity_cdc'::regrole)), 0,
          'nobody is a member of the vault or cdc role, and they are members of nothing (no pg_write_server_files, ...)');
SELECT throws_ok($$SET LOCAL ROLE singularity_vault; COPY (SELECT 1) TO PROGRAM 'true'; RESET ROLE$$, '42501', NULL,
                 'singularity_vault cannot run a program (COPY TO PROGRAM)');
SELECT throws_ok($$SET LOCAL ROLE singularity_vault; COPY (SELECT 1) TO '/tmp/t_vault_write'; RESET ROLE$$, '42501', NULL,
                 'singularity_vault cannot write a file (COPY TO a file)');
SELECT throws_ok($$SET LOCAL ROLE singularity_vault; SELECT pg_catalog.pg_read_file('/etc/passwd'); RESET ROLE$$, '42501', NULL,
                 'singularity_vault reads no file outside the data directory');
SELECT throws_ok($$SET LOCAL ROLE singularity_cdc; SELECT pg_catalog.pg_read_file('singularity_' || current_database() || '.keys', 0, 10, true); RESET ROLE$$,
                 '42501', NULL, 'singularity_cdc cannot read the key file');
SELECT throws_ok($$SET LOCAL ROLE singularity_cdc; SELECT * FROM core.agent_sessions; RESET ROLE$$, '42501', NULL,
                 'singularity_cdc reads no table of the database');
SELECT is((SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) FROM pg_catalog.pg_roles r
            WHERE NOT r.rolsuper AND r.rolname NOT IN ('singularity_vault', 'singularity_cdc')
              AND (pg_has_role(r.oid, 'singularity_vault', 'MEMBER') OR pg_has_role(r.oid, 'singularity_cdc', 'MEMBER'))), NULL,
          'no other role (own_singularity and svc_singularity included) can act as the vault or cdc role');
SELECT is((SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) FROM pg_catalog.pg_roles r
            WHERE NOT r.rolsuper AND (has_function_privilege(r.oid, 'vault.rotate_key()', 'EXECUTE')
                                   OR has_function_privilege(r.oid, 'vault._create_key_file()', 'EXECUTE'))), NULL,
          'only a superuser may run the key-file writers vault.rotate_key() and vault._create_key_file()');
SELECT is((SELECT count(*)::int FROM pg_catalog.pg_proc p
            WHERE p.pronamespace IN ('vault'::regnamespace, 'cdc'::regnamespace) AND p.prosecdef
              AND pg_catalog.pg_get_functiondef(p.oid) ~* 'TO\s+PROGRAM'), 0,
          'no vault or cdc definer writes a file (no COPY ... TO PROGRAM)');
SELECT throws_ok($$SET LOCAL ROLE own_singularity; SELECT vault.rotate_key(); RESET ROLE$$, '42501', NULL,
                 'the owner role may not rotate keys');

SELECT * FROM finish();
ROLLBACK;
