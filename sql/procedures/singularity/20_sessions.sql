-- Agent sessions: the state is encrypted before the row is written (the plaintext never reaches
-- the table, WAL, pg_dump or CDC); only the database owner role can decrypt.

-- BEFORE INSERT/UPDATE trigger: encrypt NEW.state with the newest key, set synced_at, queue a
-- session-synced heartbeat (ids and sizes only, never the state).
CREATE OR REPLACE FUNCTION core.persist_agent_session()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    enc record;
BEGIN
    IF NEW.state IS NULL THEN
        IF TG_OP = 'INSERT' THEN
            RAISE EXCEPTION 'agent session for agent % has a NULL state', NEW.agent_id
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = 'Pass the session state as a JSON value (use {} for an empty session).';
        END IF;
        RETURN NEW;   -- an update that does not touch the state
    END IF;
    enc := vault.encrypt(NEW.state);
    NEW.state_enc := enc.ciphertext;
    NEW.key_id := enc.key_id;
    NEW.state := NULL;
    NEW.updated_at := now();
    NEW.synced_at := now();
    INSERT INTO outbox.messages (queue, message)
    VALUES ('instance_heartbeat',
            jsonb_build_object('type', 'heartbeat', 'instance_id', core.instance_id(), 'service', 'singularity',
                               'at', core._iso(now()),
                               'stats', jsonb_build_object('event', 'session_synced', 'session_id', NEW.id,
                                                           'agent_id', NEW.agent_id, 'key_id', NEW.key_id,
                                                           'bytes', octet_length(NEW.state_enc))));
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION core.persist_agent_session() IS 'Encrypts a session state on write, sets synced_at, queues a sync event.';

CREATE OR REPLACE TRIGGER persist_agent_session BEFORE INSERT OR UPDATE OF state ON core.agent_sessions
    FOR EACH ROW EXECUTE FUNCTION core.persist_agent_session();

-- The decrypted state of session P_ID (owner role only; service roles get 42501).
CREATE OR REPLACE FUNCTION core.session_state(p_id text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s core.agent_sessions;
BEGIN
    SELECT * INTO s FROM core.agent_sessions WHERE id = p_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no agent session %', p_id
            USING ERRCODE = 'no_data_found', HINT = 'List sessions with SELECT id, agent_id FROM core.agent_sessions.';
    END IF;
    RETURN vault.decrypt(s.key_id, s.state_enc);
END;
$$;
COMMENT ON FUNCTION core.session_state(text) IS 'Decrypted state of a session; only the database owner may call it.';

-- Re-encrypt every session with the newest key (after `orchestrator instance rotate-key`). Owner only.
CREATE OR REPLACE FUNCTION core.reencrypt_sessions()
RETURNS int LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
    newest int := (vault.encrypt('{}')).key_id;
BEGIN
    UPDATE core.agent_sessions SET state = vault.decrypt(key_id, state_enc)
     WHERE key_id IS DISTINCT FROM newest AND state_enc IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION core.reencrypt_sessions() IS 'Re-encrypts sessions written with older keys using the newest one.';
