-- The SECURITY DEFINER audit, included (\ir) by tests/sql/<database>/99_definers.sql after it filled
-- two temp tables:
--   definer_allow (fn, reason): superuser-owned definers allowed in this database, each with why;
--   definer_todo  (fn, reason): definers of files another branch owns whose search_path is pinned
--                               there, not here yet (that one assertion is a pgTAP TODO until then).
-- fn is 'schema.name(identity arguments)'. Every definer in a non-system schema is checked, so a
-- new one is covered without touching this file:
--   1. SET search_path is exactly `pg_catalog, pg_temp` (a C function of an allowed extension,
--      which resolves no SQL names, may have none);
--   2. its owner is not a superuser, unless allowed with a reason;
--   3. PUBLIC may not EXECUTE it;
--   4. nobody but the schema's owner may CREATE in its schema, and that owner is the function's
--      owner or a superuser (no less trusted role can put objects next to it).
CREATE TEMP TABLE definers ON COMMIT DROP AS
SELECT p.oid,
       format('%s.%s(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS fn,
       pg_catalog.pg_get_userbyid(p.proowner) AS owner, r.rolsuper AS owner_super,
       l.lanname AS lang, n.nspname AS schema, n.nspowner AS schema_owner,
       (SELECT array_agg(c ORDER BY c) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%') AS search_path,
       p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_execute,
       (SELECT string_agg(pg_catalog.pg_get_userbyid(a.grantee), ', ' ORDER BY 1)
          FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
         WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner) AS others_create,
       (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = n.nspowner) AS schema_owner_super,
       al.reason AS allowed, td.reason AS todo
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  LEFT JOIN definer_allow al ON al.fn = format('%s.%s(%s)', n.nspname, p.proname,
                                              pg_catalog.pg_get_function_identity_arguments(p.oid))
  LEFT JOIN definer_todo td ON td.fn = format('%s.%s(%s)', n.nspname, p.proname,
                                             pg_catalog.pg_get_function_identity_arguments(p.oid))
 WHERE p.prosecdef
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
   AND n.nspname NOT LIKE 'pg_temp%';

CREATE FUNCTION pg_temp.audit_definers() RETURNS SETOF text LANGUAGE plpgsql AS $audit$
DECLARE
    d record;
BEGIN
    RETURN NEXT ok((SELECT count(*) FROM definers) > 0,
                   format('%s definers found in %s (the audit is not vacuous)', (SELECT count(*) FROM definers),
                          current_database()));
    RETURN NEXT is((SELECT string_agg(a.fn, ', ' ORDER BY a.fn) FROM definer_allow a
                     WHERE NOT EXISTS (SELECT 1 FROM definers x WHERE x.fn = a.fn)), NULL,
                   'every allow-listed definer exists (no stale entries)');
    FOR d IN SELECT * FROM definers ORDER BY fn LOOP
        IF d.todo IS NOT NULL THEN
            PERFORM todo_start(d.todo);
        END IF;
        RETURN NEXT ok(coalesce(d.search_path = ARRAY['search_path=pg_catalog, pg_temp'], false)
                       OR (d.search_path IS NULL AND d.lang = 'c' AND d.allowed IS NOT NULL),
                       format('%s: SET search_path = pg_catalog, pg_temp (has %s)', d.fn,
                              coalesce(array_to_string(d.search_path, ' '), 'none')));
        IF d.todo IS NOT NULL THEN
            PERFORM todo_end();
        END IF;
        RETURN NEXT ok(NOT d.owner_super OR d.allowed IS NOT NULL,
                       format('%s: owner %s %s', d.fn, d.owner,
                              CASE WHEN NOT d.owner_super THEN 'is not a superuser'
                                   WHEN d.allowed IS NOT NULL THEN 'is a superuser, allowed: ' || d.allowed
                                   ELSE 'is a SUPERUSER and not on the allow-list' END));
        RETURN NEXT ok(NOT d.public_execute, format('%s: PUBLIC may not execute it', d.fn));
        RETURN NEXT ok(d.others_create IS NULL AND coalesce(d.schema_owner_super OR d.schema_owner = (
                           SELECT oid FROM pg_catalog.pg_roles WHERE rolname = d.owner), false),
                       format('%s: only %s may create in schema %s (others: %s)', d.fn,
                              pg_catalog.pg_get_userbyid(d.schema_owner), d.schema, coalesce(d.others_create, 'none')));
    END LOOP;
END;
$audit$;

SELECT plan((2 + 4 * (SELECT count(*) FROM definers))::int);
SELECT * FROM pg_temp.audit_definers();
