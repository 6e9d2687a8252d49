-- Publishing without the app (DESIGN.md section 7): the outbox drain sends to shared_queue over
-- dblink (server `bus`, user mapping of this database's roles) and deletes rows only after the remote
-- commit; the inbox consumer folds knowledge and templates sent to this instance.

-- The bus envelope of an outbox row: its id, source and created_at = when the business transaction
-- wrote it (not when the drain sent it), so receivers can order messages drained in the same batch.
CREATE OR REPLACE FUNCTION outbox._envelope(p_message jsonb, p_id text, p_created_at timestamptz, p_source text)
RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$
    SELECT p_message || jsonb_build_object(
        'id', p_id, 'source', coalesce(p_message->>'source', p_source),
        'created_at', coalesce(p_message->>'created_at',
                               to_char(p_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
$$;

-- Open (or reuse) the named dblink connection CONN to shared_queue; NULL on success, else the error.
CREATE OR REPLACE FUNCTION outbox._connect(p_conn text)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ops.bus_off() IS NOT NULL THEN
        RETURN ops.bus_off();
    END IF;
    IF p_conn = ANY (coalesce(extensions.dblink_get_connections(), '{}')) THEN
        RETURN NULL;
    END IF;
    PERFORM extensions.dblink_connect(p_conn, 'bus');
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN format('cannot reach shared_queue over dblink (server "bus"): %s', SQLERRM);
END;
$$;

-- True when the named dblink connection CONN still answers.
CREATE OR REPLACE FUNCTION outbox._alive(p_conn text)
RETURNS boolean LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM * FROM extensions.dblink(p_conn, 'SELECT 1') AS t(x int);
    RETURN true;
EXCEPTION WHEN others THEN
    PERFORM extensions.dblink_disconnect(p_conn) WHERE p_conn = ANY (coalesce(extensions.dblink_get_connections(), '{}'));
    RETURN false;
END;
$$;

-- One batch: up to P_BATCH live rows with id > P_AFTER, one pgmq.send_batch per queue (remote
-- autocommit; the bus validates every message), then the batch is deleted locally. Nothing is written
-- locally before the remote send (no xid held meanwhile: a long local transaction would slow every
-- insert on the bus). A batch the bus refuses is retried message by message; a message refused
-- P_MAX_ATTEMPTS times is marked dead (kept, never lost). Returns {sent, failed, dead, error, last_id}.
CREATE OR REPLACE FUNCTION outbox._drain_batch(p_batch int, p_after text, p_max_attempts int)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    conn    text := 'outbox_drain';
    err     text := outbox._connect('outbox_drain');
    src     text := 'singularity:' || core.instance_id();
    sent    int := 0;
    failed  int := 0;
    died    int := 0;
    last_id text;
    is_dead boolean;
    q       record;
    m       record;
BEGIN
    IF err IS NOT NULL AND ops.bus_off() IS NOT NULL THEN
        -- the bus is turned off: nothing is tried, no attempt is counted; the drain records why it waited
        RETURN jsonb_build_object('sent', 0, 'failed', 0, 'dead', 0, 'error', err, 'last_id', NULL);
    END IF;
    IF err IS NOT NULL THEN
        -- shared_queue down: record why on the oldest waiting rows (they stay for the next run)
        UPDATE outbox.messages SET attempts = attempts + 1, last_error = err, last_attempt_at = now()
         WHERE id IN (SELECT id FROM outbox.messages WHERE NOT dead ORDER BY id LIMIT p_batch);
        GET DIAGNOSTICS failed = ROW_COUNT;
        RETURN jsonb_build_object('sent', 0, 'failed', failed, 'dead', 0, 'error', err, 'last_id', NULL);
    END IF;
    SELECT max(id) INTO last_id FROM (
        SELECT id FROM outbox.messages WHERE NOT dead AND id > p_after ORDER BY id LIMIT p_batch) b;
    IF last_id IS NULL THEN
        RETURN jsonb_build_object('sent', 0, 'failed', 0, 'dead', 0, 'error', NULL, 'last_id', NULL);
    END IF;
    FOR q IN
        SELECT queue, array_agg(id ORDER BY id) AS qids,
               array_agg(outbox._envelope(message, id, created_at, src)
                         ORDER BY id) AS msgs
          FROM outbox.messages WHERE NOT dead AND id > p_after AND id <= last_id GROUP BY queue
    LOOP
        BEGIN
            PERFORM * FROM extensions.dblink(conn, format('SELECT count(*) FROM pgmq.send_batch(%L, %L::jsonb[])',
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
            FOR m IN SELECT id, message, created_at FROM outbox.messages WHERE id = ANY (q.qids) ORDER BY id LOOP
                BEGIN
                    PERFORM * FROM extensions.dblink(conn, format('SELECT pgmq.send(%L, %L::jsonb)', q.queue,
                        outbox._envelope(m.message, m.id, m.created_at, src)))
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
                    died := died + CASE WHEN is_dead THEN 1 ELSE 0 END;
                END;
            END LOOP;
        END;
    END LOOP;
    RETURN jsonb_build_object('sent', sent, 'failed', failed, 'dead', died, 'error', err, 'last_id', last_id);
END;
$$;

-- Drain up to P_MAX messages in batches of P_BATCH, in the caller's transaction (core.run_job uses
-- it). One drainer per database at a time (advisory lock): this one waits for a running drain.
-- Returns {sent, failed, dead, error}.
CREATE OR REPLACE FUNCTION outbox.drain(p_batch int DEFAULT 200, p_max int DEFAULT 100000,
                                        p_max_attempts int DEFAULT 5)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t0   timestamptz := clock_timestamp();
    tot  jsonb := jsonb_build_object('sent', 0, 'failed', 0, 'dead', 0, 'error', NULL);
    r    jsonb;
    after text := '';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('outbox.drain'));   -- waits for a running pg_cron drain
    LOOP
        r := outbox._drain_batch(least(p_batch, p_max - (tot->>'sent')::int - (tot->>'failed')::int), after,
                                 p_max_attempts);
        tot := jsonb_build_object('sent', (tot->>'sent')::int + (r->>'sent')::int,
                                  'failed', (tot->>'failed')::int + (r->>'failed')::int,
                                  'dead', (tot->>'dead')::int + (r->>'dead')::int, 'error', r->'error');
        EXIT WHEN r->>'last_id' IS NULL OR r->>'error' IS NOT NULL
               OR (tot->>'sent')::int + (tot->>'failed')::int >= p_max;
        after := r->>'last_id';
    END LOOP;
    INSERT INTO outbox.drain_runs (sent, failed, error, duration_ms)
    VALUES ((tot->>'sent')::int, (tot->>'failed')::int, tot->>'error',
            round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1));
    RETURN tot;
END;
$$;
COMMENT ON FUNCTION outbox.drain(int, int, int) IS
    'Sends outbox rows to shared_queue over dblink in one transaction; deletes them only after the remote commit.';

-- What pg_cron runs: the drain committing after every batch (short local transactions keep the bus
-- fast and release sent rows early), recorded in core.job_runs as drain_outbox like core.run_job.
-- SECURITY INVOKER without SET (a procedure that commits may have neither): every name is qualified.
CREATE OR REPLACE PROCEDURE outbox.drain_all(p_batch int DEFAULT 200, p_max int DEFAULT 1000000,
                                            p_max_attempts int DEFAULT 5)
LANGUAGE plpgsql
AS $$
DECLARE
    t0    timestamptz := clock_timestamp();
    sent  int := 0;
    failed int := 0;
    err   text;
    r     jsonb;
    after text := '';
BEGIN
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('outbox.drain')) THEN
        RETURN;   -- another drain is running
    END IF;
    LOOP
        r := outbox._drain_batch(LEAST(p_batch, p_max - sent - failed), after, p_max_attempts);
        sent := sent + (r->>'sent')::int;
        failed := failed + (r->>'failed')::int;
        err := r->>'error';
        COMMIT;
        EXIT WHEN r->>'last_id' IS NULL OR err IS NOT NULL OR sent + failed >= p_max;
        after := r->>'last_id';
    END LOOP;
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('outbox.drain'));
    PERFORM outbox._record_drain(t0, sent, failed, err);
END;
$$;
COMMENT ON PROCEDURE outbox.drain_all(int, int, int) IS 'pg_cron''s drain: outbox -> shared_queue, committing per batch.';

-- Record a drain_all run in outbox.drain_runs and core.job_runs (job drain_outbox).
CREATE OR REPLACE FUNCTION outbox._record_drain(p_t0 timestamptz, p_sent int, p_failed int, p_error text)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO outbox.drain_runs (sent, failed, error, duration_ms)
    VALUES (p_sent, p_failed, p_error, round(extract(epoch FROM clock_timestamp() - p_t0)::numeric * 1000, 1));
    INSERT INTO core.job_runs (job, started_at, finished_at, status, detail)
    VALUES ('drain_outbox', p_t0, clock_timestamp(), CASE WHEN p_error IS NULL THEN 'ok' ELSE 'failed' END,
            coalesce(p_error, jsonb_build_object('sent', p_sent, 'failed', p_failed)::text));
$$;

-- Fold up to P_MAX messages from this instance's knowledge_updates and template_updates inboxes into
-- core.global_knowledge and core.templates, then ack them (fenced). Folding is idempotent (by
-- message id), so a redelivery changes nothing. Returns {knowledge, templates, error}.
CREATE OR REPLACE FUNCTION outbox.consume_inbox(p_max int DEFAULT 100)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
        -- First ack what earlier runs folded in and committed (never before the local commit).
        SELECT array_agg(msg_id ORDER BY msg_id), array_agg(read_ct ORDER BY msg_id) INTO mids, rcts
          FROM outbox.inbox_acks WHERE queue = q;
        IF mids IS NOT NULL THEN
            PERFORM * FROM extensions.dblink(conn, format('SELECT bus.ack(%L, %L::bigint[], %L::int[])', q, mids, rcts))
                AS t(id bigint);
            DELETE FROM outbox.inbox_acks WHERE queue = q AND msg_id = ANY (mids);
        END IF;
        -- Then fold new deliveries in; they are acked at the next run (the 120 s lease outlasts the 1 min schedule).
        FOR r IN SELECT * FROM extensions.dblink(conn, format('SELECT msg_id, read_ct, message::text FROM pgmq.read(%L, 120, %s)', q, p_max))
                          AS t(msg_id bigint, read_ct int, message text) LOOP
            msg := r.message::jsonb;
            INSERT INTO outbox.inbox_acks (queue, msg_id, read_ct) VALUES (q, r.msg_id, r.read_ct)
            ON CONFLICT (queue, msg_id) DO UPDATE SET read_ct = EXCLUDED.read_ct, folded_at = now();
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
                -- files removed from the templates repository go away here too
                IF jsonb_typeof(msg->'deleted_files') = 'array' THEN
                    DELETE FROM core.templates
                     WHERE path IN (SELECT jsonb_array_elements_text(msg->'deleted_files'));
                END IF;
                nt := nt + 1;
            ELSE
                INSERT INTO core.logs (level, message, detail)
                VALUES ('info', format('inbox %s: %s', q, msg->>'type'), msg);
            END IF;
            IF msg->>'id' IS NOT NULL THEN
                INSERT INTO outbox.inbox_seen (message_id, queue) VALUES (msg->>'id', q) ON CONFLICT DO NOTHING;
            END IF;
        END LOOP;
    END LOOP;
    RETURN jsonb_build_object('knowledge', nk, 'templates', nt);
END;
$$;
COMMENT ON FUNCTION outbox.consume_inbox(int) IS
    'Folds this instance''s knowledge_updates and template_updates into global_knowledge and templates; '
    'acks them at the next run, after the fold committed (nothing lost if a run fails midway).';
