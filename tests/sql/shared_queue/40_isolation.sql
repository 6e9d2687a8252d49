-- Isolation between the five databases (checked from shared_queue: database ACLs and roles are
-- cluster-wide). Each service may connect to its own database and shared_queue only; each owner
-- only to its own database; PUBLIC to none; no project role is a superuser or holds another role.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(89);

CREATE TEMP TABLE t_roles (r name PRIMARY KEY) ON COMMIT DROP;
INSERT INTO t_roles VALUES ('svc_singularity'), ('svc_genesis'), ('svc_nexus'), ('svc_centralcloud'),
    ('own_singularity'), ('own_genesis'), ('own_nexus'), ('own_centralcloud'), ('own_shared_queue');
CREATE TEMP TABLE t_dbs (d name PRIMARY KEY) ON COMMIT DROP;
INSERT INTO t_dbs VALUES ('singularity'), ('genesis'), ('nexus'), ('centralcloud'), ('shared_queue'), ('postgres');
-- Written out: the only (role, database) pairs with CONNECT. Everything else must be refused.
CREATE TEMP TABLE t_connect (r name, d name, PRIMARY KEY (r, d)) ON COMMIT DROP;
INSERT INTO t_connect VALUES
    ('svc_singularity', 'singularity'),   ('svc_singularity', 'shared_queue'),
    ('svc_genesis', 'genesis'),           ('svc_genesis', 'shared_queue'),
    ('svc_nexus', 'nexus'),               ('svc_nexus', 'shared_queue'),
    ('svc_centralcloud', 'centralcloud'), ('svc_centralcloud', 'shared_queue'),
    ('own_singularity', 'singularity'),   ('own_genesis', 'genesis'),   ('own_nexus', 'nexus'),
    ('own_centralcloud', 'centralcloud'), ('own_shared_queue', 'shared_queue');

SELECT set_eq($$SELECT d FROM t_dbs$$, $$SELECT datname FROM pg_database WHERE datname = ANY (ARRAY(SELECT d FROM t_dbs))$$,
              'the five project databases and postgres exist');

-- CONNECT per role and database: 9 roles x 6 databases.
SELECT is(has_database_privilege(t_roles.r, t_dbs.d, 'CONNECT'),
          EXISTS (SELECT 1 FROM t_connect c WHERE c.r = t_roles.r AND c.d = t_dbs.d),
          format('%s %s CONNECT to %s', t_roles.r,
                 CASE WHEN EXISTS (SELECT 1 FROM t_connect c WHERE c.r = t_roles.r AND c.d = t_dbs.d) THEN 'may' ELSE 'may not' END,
                 t_dbs.d))
  FROM t_roles, t_dbs ORDER BY t_roles.r, t_dbs.d;

-- PUBLIC: no CONNECT, no TEMPORARY on any of them.
SELECT ok(NOT has_database_privilege('public', d, 'CONNECT'), format('PUBLIC may not CONNECT to %s', d)) FROM t_dbs ORDER BY d;
SELECT ok(NOT has_database_privilege('public', d, 'TEMPORARY'), format('PUBLIC may not create TEMPORARY tables in %s', d))
  FROM t_dbs ORDER BY d;
SELECT is_empty($$SELECT datname FROM pg_database, aclexplode(datacl) a
                   WHERE datname IN (SELECT d FROM t_dbs) AND a.grantee = 0$$,
                'no ACL entry for PUBLIC on the project databases (REVOKE ... FROM PUBLIC applied)');

-- Services get CONNECT only: no TEMPORARY, no CREATE anywhere.
SELECT is_empty($$SELECT r, d FROM t_roles, t_dbs WHERE r LIKE 'svc\_%'
                   AND (has_database_privilege(r, d, 'TEMPORARY') OR has_database_privilege(r, d, 'CREATE'))$$,
                'no service role may create temporary tables or schemas in any database');

-- Each project database is owned by its owner role.
SELECT is((SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = d), 'own_' || d,
          format('database %s is owned by own_%s', d, d))
  FROM t_dbs WHERE d <> 'postgres' ORDER BY d;

-- Roles: none is a superuser; none may create roles or databases, bypass RLS or replicate.
SELECT ok(NOT (SELECT rolsuper FROM pg_roles WHERE rolname = r), format('%s is not a superuser', r)) FROM t_roles ORDER BY r;
SELECT is_empty($$SELECT rolname FROM pg_roles WHERE rolname IN (SELECT r FROM t_roles)
                   AND (rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)$$,
                'no project role may create roles or databases, bypass RLS or replicate');
SELECT is_empty($$SELECT roleid::regrole, member::regrole FROM pg_auth_members
                   WHERE member IN (SELECT oid FROM pg_roles WHERE rolname IN (SELECT r FROM t_roles))$$,
                'no project role is a member of another role (no inherited rights, no SET ROLE to an owner)');
SELECT is((SELECT count(*)::int FROM pg_roles WHERE rolname IN (SELECT r FROM t_roles) AND rolcanlogin), 9,
          'all nine project roles exist and can log in');

-- A password is each role's identity: SCRAM verifiers only, and no trust rule but the superuser's socket.
SELECT is_empty($$SELECT rolname FROM pg_authid WHERE rolname IN (SELECT r FROM t_roles)
                   AND (rolpassword IS NULL OR rolpassword NOT LIKE 'SCRAM-SHA-256$%')$$,
                'every project role has a SCRAM-SHA-256 password (no MD5, no passwordless role)');
SELECT is_empty($$SELECT line_number FROM pg_hba_file_rules
                   WHERE auth_method IN ('trust', 'password', 'md5', 'ident', 'peer')
                     AND NOT (type = 'local' AND user_name = ARRAY[current_user::text])$$,
                'pg_hba: only the cluster superuser on the local socket is trusted; everyone else uses scram-sha-256');
SELECT is_empty($$SELECT line_number FROM pg_hba_file_rules WHERE error IS NOT NULL$$, 'pg_hba.conf has no broken lines');

SELECT * FROM finish();
ROLLBACK;
