-- nexus sign-in for the HITL page: svc_nexus verifies a password and starts a session in ONE call
-- (nexus.sign_in with a key derived in Python), never reads a hash, never starts a session without the
-- key; the throttle (per user and address, per address, per user name, per known browser) lives in SQL;
-- notices for the page are stored server-side. Values are checked as the owner; what svc_nexus may and
-- may not do is attempted as svc_nexus (SET LOCAL ROLE ... RESET ROLE).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(58);

-- structure ---------------------------------------------------------------------------------------------
SELECT has_function('nexus', 'login_params', ARRAY['text', 'inet', 'bytea'], 'nexus.login_params(user, address, browser) exists');
SELECT has_function('nexus', 'sign_in', ARRAY['text', 'bytea', 'bytea', 'text', 'integer', 'inet', 'bytea', 'bytea'],
                    'nexus.sign_in(user, key, session, csrf, ttl, address, browser, new browser) exists');
SELECT hasnt_function('nexus', 'user_hash', ARRAY['text'], 'nexus.user_hash is gone: no function hands out a hash');
SELECT hasnt_function('nexus', 'session_create', ARRAY['bytea', 'text', 'text', 'integer'],
                      'nexus.session_create is gone: a session needs the password''s key');
SELECT has_table('nexus', 'signin_failures', 'table nexus.signin_failures exists');
SELECT has_table('nexus', 'signin_devices', 'table nexus.signin_devices exists');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
            WHERE p.pronamespace = 'nexus'::regnamespace AND p.prosecdef
              AND p.proname IN ('login_params', 'sign_in', 'session_get', 'session_page', 'session_flash', 'session_delete')
              AND p.proconfig = ARRAY['search_path=pg_catalog, pg_temp']),
          ARRAY['login_params', 'session_delete', 'session_flash', 'session_get', 'session_page', 'sign_in'],
          'every definer of the page pins search_path = pg_catalog, pg_temp');

-- two users: salt 'saltsaltsaltsalt', keys sha256('alice-key') / sha256('bob-key') (what scrypt would give)
SELECT nexus.user_set('tap_alice', 'scrypt$16384$8$1$' || encode('saltsaltsaltsalt'::bytea, 'base64') || '$'
                      || encode(sha256('alice-key'), 'base64'));
SELECT nexus.user_set('tap_bob', 'scrypt$16384$8$1$' || encode('bobsaltbobsaltbo'::bytea, 'base64') || '$'
                      || encode(sha256('bob-key'), 'base64'));

-- what svc_nexus may not do ---------------------------------------------------------------------------------
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT password_hash FROM nexus.users; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot read nexus.users (the password hashes)');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.sessions; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot read nexus.sessions');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus;
                   INSERT INTO nexus.sessions (token_hash, username, csrf, expires_at)
                   VALUES ('\x99', 'tap_alice', 'c', now() + interval '1 hour'); RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot write a session for a user by hand');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.user_hash('tap_alice'); RESET ROLE$$, '42883', NULL,
                 'svc_nexus cannot get a user''s hash: nexus.user_hash does not exist');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.session_create('\x99', 'tap_alice', 'c', 60); RESET ROLE$$,
                 '42883', NULL, 'svc_nexus cannot start a session for another user: nexus.session_create does not exist');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus._password_parts('tap_alice'); RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot call the internal that parses a stored hash');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.signin_failures; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot read the failed sign-ins');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; DELETE FROM nexus.signin_failures; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot clear the throttle');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus;
                   INSERT INTO nexus.signin_devices (token_hash, username, expires_at) VALUES ('\x99', 'tap_alice', now());
                   RESET ROLE$$, '42501', NULL, 'svc_nexus cannot mark a browser as known for a user');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.signin_secret; RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot read the secret behind unknown users'' salts');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.signin_unblock('tap_alice'); RESET ROLE$$, '42501', NULL,
                 'svc_nexus cannot unblock (operator only)');
SELECT throws_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus._signin_wait('tap_alice', '192.0.2.1', NULL); RESET ROLE$$,
                 '42501', NULL, 'svc_nexus cannot call the throttle''s internals');
SELECT throws_ok($$SELECT nexus.user_set('tap_x', 'plain text password')$$, '22023', NULL,
                 'user_set takes only scrypt$N$r$p$salt$key hashes');

-- login_params: the salt and parameters to derive a key with; the same for unknown users ---------------------
SELECT results_eq($$SELECT status, salt, n, r, p, dklen FROM nexus.login_params('tap_alice', '192.0.2.1', NULL)$$,
                  $$VALUES ('ok'::text, 'saltsaltsaltsalt'::bytea, 16384, 8, 1, 32)$$,
                  'login_params gives a user''s salt and scrypt parameters');
SELECT results_eq($$SELECT status, length(salt), n, r, p, dklen FROM nexus.login_params('tap_nobody', '192.0.2.1', NULL)$$,
                  $$VALUES ('ok'::text, 16, 16384, 8, 1, 32)$$,
                  'an unknown user gets a salt and parameters of the same shape');
SELECT is((SELECT salt FROM nexus.login_params('tap_nobody', '192.0.2.9', NULL)),
          (SELECT salt FROM nexus.login_params('tap_nobody', '192.0.2.1', NULL)),
          '... the same salt every time (asking twice does not tell a made-up salt)');
SELECT isnt((SELECT salt FROM nexus.login_params('tap_nobody', '192.0.2.1', NULL)),
            (SELECT salt FROM nexus.login_params('tap_nobody2', '192.0.2.1', NULL)), '... and one per name');
SELECT lives_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.login_params('tap_alice', '192.0.2.1', NULL); RESET ROLE$$,
                'svc_nexus may ask for the parameters');

-- sign_in ----------------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_alice', sha256('wrong'), '\x01', 'csrf1', 60, '192.0.2.1')$$,
                  $$VALUES ('wrong'::text)$$, 'a wrong key is refused');
SELECT is((SELECT count(*)::int FROM nexus.sessions WHERE token_hash = '\x01'), 0, '... and creates no session');
SELECT is((SELECT count(*)::int FROM nexus.signin_failures WHERE username = 'tap_alice' AND addr = '192.0.2.1'), 1,
          '... and is recorded for the throttle');
SELECT lives_ok($$SET LOCAL ROLE svc_nexus; SELECT * FROM nexus.sign_in('tap_alice', sha256('guess'), '\x03', 'c', 60,
                  '192.0.2.2'); RESET ROLE$$, 'svc_nexus may try a sign-in');
SELECT is((SELECT count(*)::int FROM nexus.sessions WHERE token_hash = '\x03'), 0,
          'svc_nexus''s sign-in with a wrong key creates no session');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_nobody', sha256('x'), '\x04', 'c', 60, '192.0.2.1')$$,
                  $$VALUES ('wrong'::text)$$, 'an unknown user is just a wrong sign-in');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x02', 'csrf2', 60, '192.0.2.1')$$,
                  $$VALUES ('signed_in'::text)$$, 'the right key signs in');
SELECT results_eq($$SELECT username, csrf FROM nexus.session_get('\x02')$$, $$VALUES ('tap_alice'::text, 'csrf2'::text)$$,
                  '... with a session for that user and its CSRF token');
SELECT is((SELECT count(*)::int FROM nexus.signin_failures WHERE username = 'tap_alice' AND addr = '192.0.2.1'), 0,
          '... which clears the user''s failures from that address');
SELECT is((SELECT count(*)::int FROM nexus.signin_failures WHERE username = 'tap_alice' AND addr = '192.0.2.2'), 1,
          '... but not those from elsewhere');

-- per user and address: five failures hold that pair back, not the user elsewhere ----------------------------
SELECT nexus.sign_in('tap_bob', sha256(convert_to('guess' || i, 'UTF8')), '\x05', 'c', 60, '192.0.2.10') FROM generate_series(1, 5) i;
SELECT results_eq($$SELECT status, reason FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x06', 'c', 60, '192.0.2.10')$$,
                  $$VALUES ('throttled'::text, 'user_address'::text)$$,
                  'after five failures the user is held back at that address, even with the right key');
SELECT ok((SELECT retry_after_s BETWEEN 1 AND 900 FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x06', 'c', 60,
                                                                     '192.0.2.10')), '... for at most 15 minutes');
SELECT is((SELECT count(*)::int FROM nexus.sessions WHERE token_hash = '\x06'), 0, '... and gets no session');
SELECT is((SELECT status FROM nexus.login_params('tap_bob', '192.0.2.10', NULL)), 'throttled',
          'login_params says so before any key is derived');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x07', 'c', 60, '192.0.2.11')$$,
                  $$VALUES ('signed_in'::text)$$, 'the same user from another address signs in');

-- per address: twenty failures over any names hold the address back, not a browser known for its user -------
SELECT nexus.sign_in('tap_spray' || i, sha256('guess'), '\x08', 'c', 60, '192.0.2.20') FROM generate_series(1, 20) i;
SELECT results_eq($$SELECT status, reason FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x09', 'c', 60, '192.0.2.20')$$,
                  $$VALUES ('throttled'::text, 'address'::text)$$,
                  'a spray over 20 names holds the address back for a new browser');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x0a', 'c', 60, '192.0.2.21',
                                                      NULL, '\xd1')$$,
                  $$VALUES ('signed_in'::text)$$, 'alice signs in elsewhere; that browser becomes known');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x0b', 'c', 60, '192.0.2.20',
                                                      '\xd1', '\xd2')$$,
                  $$VALUES ('signed_in'::text)$$, 'from the sprayed address, the browser alice signed in with before signs in');
SELECT is((SELECT array_agg(token_hash) FROM nexus.signin_devices WHERE username = 'tap_alice'), ARRAY['\xd2'::bytea],
          '... and its token is replaced by a new one');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x0c', 'c', 60, '192.0.2.20', '\xd2')$$,
                  $$VALUES ('throttled'::text)$$, 'a browser known for alice is not known for bob');

-- per user name: twenty failures from several addresses hold the name back, not its known browser -----------
SELECT nexus.sign_in('tap_alice', sha256('guess'), '\x0d', 'c', 60, ('192.0.2.' || (30 + i / 5))::inet)
  FROM generate_series(0, 19) i;
SELECT results_eq($$SELECT status, reason FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x0e', 'c', 60, '192.0.2.40')$$,
                  $$VALUES ('throttled'::text, 'user'::text)$$,
                  'twenty failures for a name from four addresses hold the name back for new browsers');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x0f', 'c', 60, '192.0.2.40',
                                                      '\xd2', '\xd3')$$,
                  $$VALUES ('signed_in'::text)$$, '... not alice''s known browser');

-- per known browser: its own five failures ------------------------------------------------------------------
SELECT nexus.sign_in('tap_alice', sha256('guess'), '\x10', 'c', 60, '192.0.2.41', '\xd3') FROM generate_series(1, 5);
SELECT results_eq($$SELECT status, reason FROM nexus.sign_in('tap_alice', sha256('alice-key'), '\x11', 'c', 60, '192.0.2.42',
                                                              '\xd3')$$,
                  $$VALUES ('throttled'::text, 'browser'::text)$$, 'five failures in a known browser hold that browser back');

-- IPv6: an address is its /64 ----------------------------------------------------------------------------------
SELECT nexus.sign_in('tap_bob', sha256('guess'), '\x12', 'c', 60, ('2001:db8::' || i)::inet) FROM generate_series(1, 5) i;
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x13', 'c', 60, '2001:db8::ffff')$$,
                  $$VALUES ('throttled'::text)$$, 'IPv6 addresses of one /64 count as one address');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x14', 'c', 60, '2001:db8:0:1::1')$$,
                  $$VALUES ('signed_in'::text)$$, '... another /64 is another address');

-- the window, and the operator's unblock -----------------------------------------------------------------------
UPDATE nexus.signin_failures SET at = now() - interval '16 minutes' WHERE username = 'tap_bob' AND addr = '192.0.2.10';
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x15', 'c', 60, '192.0.2.10')$$,
                  $$VALUES ('signed_in'::text)$$, 'failures older than 15 minutes no longer count');
SELECT ok(nexus.signin_unblock(NULL, '192.0.2.20') = 20, 'signin_unblock(NULL, address) clears an address''s failures');
SELECT results_eq($$SELECT status FROM nexus.sign_in('tap_bob', sha256('bob-key'), '\x16', 'c', 60, '192.0.2.20')$$,
                  $$VALUES ('signed_in'::text)$$, '... and its users sign in again');
SELECT ok(nexus.signin_unblock('tap_alice') > 0, 'signin_unblock(user) clears a user name''s failures');
SELECT is((SELECT count(*)::int FROM nexus.signin_failures WHERE username = 'tap_alice'), 0, '... all of them');

-- notices: set by the server, shown once ------------------------------------------------------------------------
SELECT lives_ok($$SET LOCAL ROLE svc_nexus; SELECT nexus.session_flash('\x02', 'A1: decided'); RESET ROLE$$,
                'svc_nexus may leave a notice on a session');
SELECT results_eq($$SELECT username, flash FROM nexus.session_page('\x02')$$, $$VALUES ('tap_alice'::text, 'A1: decided'::text)$$,
                  'the next page of that session shows it');
SELECT results_eq($$SELECT flash FROM nexus.session_page('\x02')$$, $$VALUES (NULL::text)$$, '... once');

SELECT * FROM finish();
ROLLBACK;
