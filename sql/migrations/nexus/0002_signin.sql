-- Sign-in for the HITL page without handing hashes to the page's role (svc_nexus):
--  * the page derives a key in Python and nexus.sign_in compares it and starts the session in one call
--    (sql/procedures/nexus/30_web.sql), so nexus.user_hash and nexus.session_create go;
--  * failed sign-ins are kept in SQL (shared by every daemon and thread) for the throttle;
--  * browsers a user signed in with are remembered (only a hash of a random cookie) so a throttled
--    address or user name does not keep them out;
--  * a secret makes the stand-in salt of an unknown user name stable and unguessable;
--  * a session carries the page's next notice (shown once), so no status text travels in a URL.
DROP FUNCTION IF EXISTS nexus.user_hash(text);
DROP FUNCTION IF EXISTS nexus.session_create(bytea, text, text, int);

ALTER TABLE nexus.sessions ADD COLUMN flash text;
COMMENT ON COLUMN nexus.sessions.flash IS 'The notice for the next page of this session (server text), shown once.';

CREATE TABLE nexus.signin_failures (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    username    text NOT NULL,       -- as typed (first 64 characters), whether the user exists or not
    addr        inet NOT NULL,       -- the client (an IPv6 client as its /64)
    device_hash bytea                -- the known browser it came from, if any
);
CREATE INDEX signin_failures_user ON nexus.signin_failures (username, at);
CREATE INDEX signin_failures_addr ON nexus.signin_failures (addr, at);
CREATE INDEX signin_failures_at ON nexus.signin_failures (at);
COMMENT ON TABLE nexus.signin_failures IS 'Failed sign-ins of the last 15 minutes: what the sign-in throttle counts.';

CREATE TABLE nexus.signin_devices (
    token_hash bytea NOT NULL,       -- sha256 of the browser's nexus_device cookie
    username   text NOT NULL REFERENCES nexus.users ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (token_hash, username)
);
CREATE INDEX signin_devices_user ON nexus.signin_devices (username);
COMMENT ON TABLE nexus.signin_devices IS 'Browsers each user signed in with (90 days): not held back by a throttled address or name.';

CREATE TABLE nexus.signin_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret   bytea NOT NULL
);
-- 244 random bits from the server's strong random source (gen_random_uuid), never in any SQL text
INSERT INTO nexus.signin_secret (secret) VALUES (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
COMMENT ON TABLE nexus.signin_secret IS 'Key for the stand-in salts of unknown user names (owner only).';
