-- Session encryption: ciphertext in the table, decrypt only for the owner role, wrong key errors,
-- bad input refused, the key appears in no table and no setting.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(20);
TRUNCATE core.agents, core.agent_knowledge, core.tasks, core.analysis_results, core.agent_sessions, outbox.messages CASCADE;

INSERT INTO core.agents (id) VALUES ('s1');
SET LOCAL ROLE svc_singularity;
INSERT INTO core.agent_sessions (id, agent_id, state) VALUES ('sess1', 's1', '{"secret": "canary-7f3a9"}');
RESET ROLE;

SELECT is((SELECT state FROM core.agent_sessions WHERE id = 'sess1'), NULL, 'the plaintext column stays NULL');
SELECT isnt((SELECT state_enc FROM core.agent_sessions WHERE id = 'sess1'), NULL, 'the ciphertext is stored');
SELECT is((SELECT position(convert_to('canary-7f3a9', 'UTF8') IN state_enc) FROM core.agent_sessions WHERE id = 'sess1'),
          0, 'the ciphertext does not contain the plaintext');
SELECT is((SELECT key_id FROM core.agent_sessions WHERE id = 'sess1'), (SELECT max(key_id) FROM vault._keys()),
          'encrypted with the newest key id');
SELECT isnt((SELECT synced_at FROM core.agent_sessions WHERE id = 'sess1'), NULL, 'synced_at is set');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE message->'stats'->>'session_id' = 'sess1'), 1,
          'a session_synced message is queued');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE message::text LIKE '%canary-7f3a9%'), 0,
          'the queued message does not carry the state');

SET LOCAL ROLE own_singularity;
SELECT core.session_state('sess1') AS plain \gset
RESET ROLE;
SELECT is(:'plain'::jsonb, '{"secret": "canary-7f3a9"}'::jsonb, 'the owner role decrypts the state');

SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT core.session_state('sess1'); RESET ROLE$$,
                 '42501', NULL, 'the service role cannot call core.session_state');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT vault.decrypt(1, '\x00'); RESET ROLE$$,
                 '42501', NULL, 'the service role cannot call vault.decrypt');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT * FROM vault._keys(); RESET ROLE$$,
                 '42501', NULL, 'the service role cannot read the keys');
SELECT throws_ok($$SET LOCAL ROLE svc_singularity; SELECT state_enc FROM core.agent_sessions; RESET ROLE$$,
                 '42501', NULL, 'the service role cannot even read the ciphertext');
SELECT throws_ok($$SET LOCAL ROLE own_singularity; SELECT pg_read_file(vault._key_file()); RESET ROLE$$,
                 '42501', NULL, 'the owner role cannot read the key file directly');

-- an update re-encrypts
UPDATE core.agent_sessions SET state = '{"secret": "second"}', synced_at = NULL WHERE id = 'sess1';
SET LOCAL ROLE own_singularity;
SELECT core.session_state('sess1') AS plain2 \gset
RESET ROLE;
SELECT is(:'plain2'::jsonb, '{"secret": "second"}'::jsonb, 'an update re-encrypts the new state');

-- wrong key / unknown key
UPDATE core.agent_sessions SET state_enc = extensions.pgp_sym_encrypt('{}', 'not-the-key') WHERE id = 'sess1';
SELECT throws_ok($$SELECT core.session_state('sess1')$$, '39000', NULL, 'data encrypted with another key fails to decrypt');
UPDATE core.agent_sessions SET key_id = 9999 WHERE id = 'sess1';
SELECT throws_ok($$SELECT core.session_state('sess1')$$, '22023', 'no session key with id 9999 in the key file',
                 'an unknown key id says so');

-- bad input
SELECT throws_ok($$INSERT INTO core.agent_sessions (agent_id, state) VALUES ('s1', NULL)$$, '22004', NULL,
                 'a NULL state is refused');
SELECT throws_ok($$INSERT INTO core.agent_sessions (agent_id, state) VALUES ('ghost', '{}')$$, '23503', NULL,
                 'a session of an unknown agent is refused');

-- the key is in no setting and no table
SELECT key AS k FROM vault._keys() ORDER BY key_id DESC LIMIT 1 \gset
SELECT is((SELECT count(*)::int FROM pg_settings WHERE setting LIKE '%' || :'k' || '%'), 0, 'the key is in no GUC');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE message::text LIKE '%' || :'k' || '%')
          + (SELECT count(*)::int FROM core.logs WHERE message LIKE '%' || :'k' || '%'), 0, 'the key is in no table');

SELECT * FROM finish();
ROLLBACK;
