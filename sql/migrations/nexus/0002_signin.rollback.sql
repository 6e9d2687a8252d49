-- Back to 0001: the sign-in functions of 0002 go with their tables; the previous code's procedures
-- (nexus.user_hash, nexus.session_create) come back with its `orchestrator migrate`.
DROP FUNCTION IF EXISTS nexus.login_params(text, inet, bytea);
DROP FUNCTION IF EXISTS nexus.sign_in(text, bytea, bytea, text, int, inet, bytea, bytea);
DROP FUNCTION IF EXISTS nexus.session_page(bytea);
DROP FUNCTION IF EXISTS nexus.session_flash(bytea, text);
DROP FUNCTION IF EXISTS nexus.signin_unblock(text, inet);
DROP FUNCTION IF EXISTS nexus._signin_wait(text, inet, bytea);
DROP FUNCTION IF EXISTS nexus._signin_trusted(text, bytea);
DROP FUNCTION IF EXISTS nexus._signin_addr(inet);
DROP FUNCTION IF EXISTS nexus._password_parts(text);
DROP FUNCTION IF EXISTS nexus._password_hash_ok(text);
DROP TABLE IF EXISTS nexus.signin_secret;
DROP TABLE IF EXISTS nexus.signin_devices;
DROP TABLE IF EXISTS nexus.signin_failures;
ALTER TABLE nexus.sessions DROP COLUMN IF EXISTS flash;
