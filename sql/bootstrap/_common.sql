-- Run by the cluster superuser in every database on every migrate, before the owner's migrations,
-- on a connection whose search_path is pg_catalog, pg_temp (db.superuser_conn): nothing here is
-- looked up through a schema an owner role controls. Idempotent. Only what needs a superuser lives
-- here; everything else is in migrations/procedures.

-- Extensions (pgcrypto here; dblink in the databases that use it) live in schema `extensions`,
-- owned by the superuser: the database owner owns `public` (pg_database_owner) and could rename it or
-- put functions of its own there, so nothing may resolve extension functions through `public`.
-- Every reference is schema-qualified (extensions.gen_random_bytes, extensions.dblink, ...).
CREATE SCHEMA IF NOT EXISTS extensions;
COMMENT ON SCHEMA extensions IS 'pgcrypto and dblink, owned by the superuser; USAGE for the roles of this database.';
REVOKE ALL ON SCHEMA extensions FROM PUBLIC;
DO $$
DECLARE
    e record;
BEGIN
    -- installed before this schema existed (in public): move them (both are relocatable)
    FOR e IN SELECT x.extname FROM pg_catalog.pg_extension x
              WHERE x.extname IN ('pgcrypto', 'dblink') AND x.extnamespace <> 'extensions'::regnamespace LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION %I SET SCHEMA extensions', e.extname);
    END LOOP;
END $$;
CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA extensions;

-- USAGE for the database owner and every role that may connect here (services, instances).
DO $$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee)
               FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
              WHERE d.datname = pg_catalog.current_database() AND a.privilege_type = 'CONNECT' AND a.grantee <> 0
             UNION
             SELECT pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d
              WHERE d.datname = pg_catalog.current_database() LOOP
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA extensions TO %I', r);
    END LOOP;
END $$;
