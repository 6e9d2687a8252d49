-- Publishing without the app (DESIGN.md section 7): the outbox drain sends to shared_queue over
-- dblink (server `bus`, user mapping of this database's roles) and deletes rows only after the remote
-- commit; the inbox consumer folds knowledge and templates sent to this instance.

-- Open (or reuse) the named dblink connection CONN to shared_queue; NULL on success, else the error.
CREATE OR REPLACE FUNCTION outbox._connect(p_conn text)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF p_conn = ANY (coalesce(dblink_get_connections(), '{}')) THEN
        RETURN NULL;
    END IF;
    PERFORM dblink_connect(p_conn, 'bus');
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN format('cannot reach shared_queue over dblink (server "bus"): %s', SQLERRM);
END;
$$;

-- True when the named dblink connection CONN still answers.
CREATE OR REPLACE FUNCTION outbox._alive(p_conn text)
RETURNS boolean LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public
AS $$
BEGIN
    PERFORM * FROM dblink(p_conn, 'SELECT 1') AS t(x int);
    RETURN true;
EXCEPTION WHEN others THEN
    PERFORM dblink_disconnect(p_conn) WHERE p_conn = ANY (coalesce(dblink_get_connections(), '{}'));
    RETURN false;
END;
$$;

-- Drain up to P_MAX messages in batches of P_BATCH: one pgmq.send_batch per queue per batch (remote
-- autocommit), then delete the batch locally. A batch the bus refuses is retried message by message;
-- a message refused P_MAX_ATTEMPTS times is marked dead (kept, never lost). If shared_queue is down
-- the rows stay, with attempts and last_error. Returns {sent, failed, dead, error}.
CREATE OR REPLACE FUNCTION outbox.drain(p_batch int DEFAULT 500, p_max int DEFAULT 100000,
                                        p_max_attempts int DEFAULT 5)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, outbox, public
AS $$
DECLARE
    conn     text := 'outbox_drain';
    err      text;
    t0       timestamptz := clock_timestamp();
    sent     int := 0;
    failed   int := 0;
    died     int := 0;
    ids      text[];
    q        record;
    m        record;
    src      text := 'singularity:' || core.instance_id();
    is_dead  boolean;
    tried    text[] := '{}';   -- refused in this run: not retried until the next run
BEGIN
    err := outbox._connect(conn);
    IF err IS NULL THEN
        LOOP
            EXIT WHEN sent + failed >= p_max;
            SELECT array_agg(id ORDER BY id) INTO ids FROM (
                SELECT id FROM outbox.messages WHERE NOT dead AND id <> ALL (tried)
                 ORDER BY id LIMIT least(p_batch, p_max - sent - failed) FOR UPDATE SKIP LOCKED) b;
            EXIT WHEN ids IS NULL;
            FOR q IN
                SELECT queue, array_agg(id ORDER BY id) AS qids,
                       array_agg(message || jsonb_build_object('id', id, 'source', coalesce(message->>'source', src))
                                 ORDER BY id) AS msgs
                  FROM outbox.messages WHERE id = ANY (ids) GROUP BY queue
            LOOP
                BEGIN
                    PERFORM * FROM dblink(conn, format('SELECT count(*) FROM pgmq.send_batch(%L, %L::jsonb[])',
                                                       q.queue, q.msgs)) AS r(n bigint);
                    DELETE FROM outbox.messages WHERE id = ANY (q.qids);
                    sent := sent + cardinality(q.qids);
                EXCEPTION WHEN others THEN
                    IF NOT outbox._alive(conn) THEN
                        err := format('shared_queue went away during the drain: %s', SQLERRM);
                        UPDATE outbox.messages SET attempts = attempts + 1, last_error = err, last_attempt_at = now()
                         WHERE id = ANY (q.qids);
                        failed := failed + cardinality(q.qids);
                        EXIT;
                    END IF;
                    -- The bus refused the batch: find the culprit(s) one message at a time.
                    FOR m IN SELECT id, message FROM outbox.messages WHERE id = ANY (q.qids) ORDER BY id LOOP
                        BEGIN
                            PERFORM * FROM dblink(conn, format('SELECT pgmq.send(%L, %L::jsonb)', q.queue,
                                m.message || jsonb_build_object('id', m.id, 'source', coalesce(m.message->>'source', src))))
                                AS r(id bigint);
                            DELETE FROM outbox.messages WHERE id = m.id;
                            sent := sent + 1;
                        EXCEPTION WHEN others THEN
                            UPDATE outbox.messages
                               SET attempts = attempts + 1, last_error = left(SQLERRM, 500), last_attempt_at = now(),
                                   dead = attempts + 1 >= p_max_attempts
                             WHERE id = m.id
                            RETURNING dead INTO is_dead;
                            failed := failed + 1;
                            tried := tried || m.id;
                            died := died + CASE WHEN is_dead THEN 1 ELSE 0 END;
                        END;
                    END LOOP;
                END;
            END LOOP;
            EXIT WHEN err IS NOT NULL;
        END LOOP;
    ELSE
        -- Remote down: record why on the oldest waiting rows (they stay for the next run).
        UPDATE outbox.messages SET attempts = attempts + 1, last_error = err, last_attempt_at = now()
         WHERE id IN (SELECT id FROM outbox.messages WHERE NOT dead ORDER BY id LIMIT p_batch FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS failed = ROW_COUNT;
    END IF;
    INSERT INTO outbox.drain_runs (sent, failed, error, duration_ms)
    VALUES (sent, failed, err, round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1));
    RETURN jsonb_build_object('sent', sent, 'failed', failed, 'dead', died, 'error', err);
END;
$$;
COMMENT ON FUNCTION outbox.drain(int, int, int) IS
    'Sends outbox rows to shared_queue over dblink; deletes them only after the remote commit.';

-- Fold up to P_MAX messages from this instance's knowledge_updates and template_updates inboxes into
-- core.global_knowledge and core.templates, then ack them (fenced). Folding is idempotent (by
-- message id), so a redelivery changes nothing. Returns {knowledge, templates, error}.
CREATE OR REPLACE FUNCTION outbox.consume_inbox(p_max int DEFAULT 100)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, core, outbox, public
AS $$
DECLARE
    conn  text := 'inbox';
    err   text := outbox._connect('inbox');
    kq    text := core.instance_queue('knowledge_updates');
    tq    text := core.instance_queue('template_updates');
    r     record;
    msg   jsonb;
    nk    int := 0;
    nt    int := 0;
    q     text;
    mids  bigint[];
    rcts  int[];
BEGIN
    IF err IS NOT NULL THEN
        RAISE EXCEPTION '%', err USING ERRCODE = 'connection_failure',
            HINT = 'Start the server that holds shared_queue; the inbox waits there until the next run.';
    END IF;
    FOREACH q IN ARRAY ARRAY[kq, tq] LOOP
        mids := '{}'; rcts := '{}';
        FOR r IN SELECT * FROM dblink(conn, format('SELECT msg_id, read_ct, message::text FROM pgmq.read(%L, 60, %s)', q, p_max))
                          AS t(msg_id bigint, read_ct int, message text) LOOP
            msg := r.message::jsonb;
            mids := mids || r.msg_id; rcts := rcts || r.read_ct;
            CONTINUE WHEN msg->>'id' IS NOT NULL
                      AND EXISTS (SELECT 1 FROM outbox.inbox_seen WHERE message_id = msg->>'id');
            IF msg->>'type' = 'aggregated_patterns' THEN
                INSERT INTO core.global_knowledge AS g (key, kind, instances, total_occurrences, confidence, rank,
                                                        packages, updated_at)
                SELECT p->>'key', p->>'kind', (p->>'instances')::int, (p->>'total_occurrences')::bigint,
                       (p->>'confidence')::numeric, (p->>'rank')::int,
                       CASE WHEN jsonb_typeof(p->'packages') = 'array'
                            THEN ARRAY(SELECT jsonb_array_elements_text(p->'packages')) END, now()
                  FROM jsonb_array_elements(msg->'patterns') p WHERE p->>'key' IS NOT NULL
                ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, instances = EXCLUDED.instances,
                    total_occurrences = EXCLUDED.total_occurrences, confidence = EXCLUDED.confidence,
                    rank = EXCLUDED.rank, packages = EXCLUDED.packages, updated_at = now();
                nk := nk + 1;
            ELSIF msg->>'type' = 'templates_updated' THEN
                INSERT INTO core.templates (path, hash, content, commit, updated_at)
                SELECT f->>'path', f->>'hash', f->>'content', msg->>'commit', now()
                  FROM jsonb_array_elements(msg->'updated_files') f WHERE f->>'path' IS NOT NULL
                ON CONFLICT (path) DO UPDATE SET hash = EXCLUDED.hash, content = EXCLUDED.content,
                    commit = EXCLUDED.commit, updated_at = now();
                nt := nt + 1;
            ELSE
                INSERT INTO core.logs (level, message, detail)
                VALUES ('info', format('inbox %s: %s', q, msg->>'type'), msg);
            END IF;
            IF msg->>'id' IS NOT NULL THEN
                INSERT INTO outbox.inbox_seen (message_id, queue) VALUES (msg->>'id', q) ON CONFLICT DO NOTHING;
            END IF;
        END LOOP;
        IF cardinality(mids) > 0 THEN
            PERFORM * FROM dblink(conn, format('SELECT bus.ack(%L, %L::bigint[], %L::int[])', q, mids, rcts))
                AS t(id bigint);
        END IF;
    END LOOP;
    RETURN jsonb_build_object('knowledge', nk, 'templates', nt);
END;
$$;
COMMENT ON FUNCTION outbox.consume_inbox(int) IS
    'Folds this instance''s knowledge_updates and template_updates into global_knowledge and templates.';
