-- Cold storage (seed 001, phase 3). The orchestrator (orchestrator archive export, and the daemon
-- hourly) writes each (queue, UTC day) past retention to a compressed file, reads it back, and records
-- it here; bus.prune_archives deletes only days recorded and verified. Every function is the
-- operator's (own_shared_queue): EXECUTE is revoked from PUBLIC and granted to nobody.
-- A file holds one line per archive row, the row's to_jsonb text, in msg_id order; its checksum
-- (bus.cold_digest) is sha256 over the concatenated md5 of every line, so the file and the live rows
-- can be compared without sending the rows back.

-- Days whose rows are past retention: every UTC day before this one (a whole day, so a file is final).
CREATE OR REPLACE FUNCTION bus.cold_cutoff()
RETURNS date LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ((now() - make_interval(days => coalesce(bus.setting('retention_days'), '90')::int)) AT TIME ZONE 'UTC')::date
$$;

-- The archive table of QUEUE, checked: a managed queue's, or a clear error.
CREATE OR REPLACE FUNCTION bus._cold_table(p_queue text)
RETURNS text LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM bus.queues WHERE queue_name = p_queue) THEN
        RAISE EXCEPTION 'unknown queue %', p_queue USING ERRCODE = '22023',
            HINT = 'orchestrator queues lists the queues; orchestrator archive list the exported days';
    END IF;
    RETURN 'a_' || p_queue;
END;
$$;

-- Live archive rows of QUEUE archived on UTC day DAY, each as the line a cold file holds.
CREATE OR REPLACE FUNCTION bus.cold_lines(p_queue text, p_day date)
RETURNS TABLE (msg_id bigint, line text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'   -- timestamps in the lines, hence the checksum, never depend on the session
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT a.msg_id, to_jsonb(a)::text FROM pgmq.%I a
          WHERE a.archived_at >= ($1::timestamp AT TIME ZONE ''UTC'') AND a.archived_at < (($1 + 1)::timestamp AT TIME ZONE ''UTC'')
          ORDER BY a.msg_id', bus._cold_table(p_queue)) USING p_day;
END;
$$;

-- Row count, first/last msg_id and checksum of QUEUE's live archive rows of DAY.
CREATE OR REPLACE FUNCTION bus.cold_digest(p_queue text, p_day date)
RETURNS TABLE (rows bigint, first_msg_id bigint, last_msg_id bigint, checksum text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*), min(l.msg_id), max(l.msg_id),
           encode(sha256(convert_to(coalesce(string_agg(md5(l.line), '' ORDER BY l.msg_id), ''), 'UTF8')), 'hex')
      FROM bus.cold_lines(p_queue, p_day) l
$$;

-- (queue, day) pairs past retention whose live rows have no verified export yet, oldest first.
CREATE OR REPLACE FUNCTION bus.cold_pending(p_limit int DEFAULT 1000)
RETURNS TABLE (queue_name text, day date, rows bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    body text;
BEGIN
    SELECT string_agg(format(
        'SELECT %L::text, (archived_at AT TIME ZONE ''UTC'')::date, count(*) FROM pgmq.%I
          WHERE archived_at < ($1::timestamp AT TIME ZONE ''UTC'') GROUP BY 2', q.queue_name, 'a_' || q.queue_name),
        ' UNION ALL ') INTO body FROM bus.queues q;
    IF body IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT p.* FROM (%s) p(queue_name, day, rows)
          WHERE NOT EXISTS (SELECT 1 FROM bus.cold_exports e WHERE e.queue_name = p.queue_name AND e.day = p.day
                              AND (e.verified_at IS NOT NULL OR e.pruning_at IS NOT NULL))
          ORDER BY p.day, p.queue_name LIMIT $2', body) USING bus.cold_cutoff(), p_limit;
END;
$$;

-- Records the export of QUEUE's DAY, after the orchestrator read the file back: refused unless the
-- file's rows (count and checksum) are exactly the live rows. Marks the day verified (prunable).
CREATE OR REPLACE FUNCTION bus.cold_record(p_queue text, p_day date, p_file text, p_rows bigint, p_checksum text,
                                           p_file_sha256 text, p_bytes bigint)
RETURNS bus.cold_exports
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d   record;
    e   bus.cold_exports;
BEGIN
    IF p_day >= bus.cold_cutoff() THEN
        RAISE EXCEPTION 'day % of % is not past retention yet (days before % are)', p_day, p_queue, bus.cold_cutoff()
            USING ERRCODE = '22023', HINT = 'export only what bus.cold_pending() lists';
    END IF;
    SELECT * INTO e FROM bus.cold_exports WHERE queue_name = p_queue AND day = p_day FOR UPDATE;
    IF e.pruning_at IS NOT NULL THEN
        RAISE EXCEPTION 'day % of % was exported to % and its rows are being deleted; it is not exported again',
                        p_day, p_queue, e.file USING ERRCODE = '55000', HINT = 'orchestrator archive verify checks that file';
    END IF;
    SELECT * INTO d FROM bus.cold_digest(p_queue, p_day);
    IF d.rows <> p_rows OR d.checksum <> p_checksum THEN
        RAISE EXCEPTION 'the file for % on % holds % rows (checksum %), the archive has % rows (checksum %)',
                        p_queue, p_day, p_rows, left(p_checksum, 12), d.rows, left(d.checksum, 12)
            USING ERRCODE = '22000', HINT = 'nothing was deleted; export that day again (orchestrator archive export)';
    END IF;
    INSERT INTO bus.cold_exports AS c (queue_name, day, file, rows, first_msg_id, last_msg_id, rows_checksum,
                                       file_sha256, bytes, verified_at)
    VALUES (p_queue, p_day, p_file, p_rows, d.first_msg_id, d.last_msg_id, p_checksum, p_file_sha256, p_bytes, now())
    ON CONFLICT (queue_name, day) DO UPDATE
       SET file = EXCLUDED.file, rows = EXCLUDED.rows, first_msg_id = EXCLUDED.first_msg_id,
           last_msg_id = EXCLUDED.last_msg_id, rows_checksum = EXCLUDED.rows_checksum,
           file_sha256 = EXCLUDED.file_sha256, bytes = EXCLUDED.bytes, exported_at = now(), verified_at = now(), note = NULL
    RETURNING * INTO e;
    RETURN e;
END;
$$;

-- A file found damaged or missing (orchestrator archive verify): the day is no longer prunable, so its
-- live rows (if any are left) stay until a new export; the reason is kept in note.
CREATE OR REPLACE FUNCTION bus.cold_unverify(p_queue text, p_day date, p_reason text)
RETURNS bus.cold_exports
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE bus.cold_exports SET verified_at = NULL, note = p_reason
     WHERE queue_name = p_queue AND day = p_day
    RETURNING *
$$;

-- Restores a batch of lines (to_jsonb of archive rows) of QUEUE's DAY into bus.restored_archive; a row
-- restored already is skipped. A row that is still in the live archive is kept too (its day may be
-- half pruned and lose it next); bus.archived_messages shows each msg_id once. Returns rows added.
CREATE OR REPLACE FUNCTION bus.cold_restore_lines(p_queue text, p_day date, p_lines text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM bus._cold_table(p_queue);   -- a managed queue, or a clear error
    INSERT INTO bus.restored_archive (queue_name, msg_id, read_ct, enqueued_at, last_read_at, archived_at, vt,
                                      message, headers, day)
    SELECT p_queue, r.msg_id, r.read_ct, r.enqueued_at, r.last_read_at, r.archived_at, r.vt, r.message, r.headers, p_day
      FROM unnest(p_lines) AS l(line),
           jsonb_populate_record(NULL::bus.restored_archive, l.line::jsonb) AS r
    ON CONFLICT (queue_name, msg_id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE bus.cold_exports SET restored_at = now() WHERE queue_name = p_queue AND day = p_day;
    RETURN n;
END;
$$;

-- Removes QUEUE's DAY from bus.restored_archive (the file stays in cold storage). Returns rows removed.
CREATE OR REPLACE FUNCTION bus.cold_unrestore(p_queue text, p_day date)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM bus.restored_archive WHERE queue_name = p_queue AND day = p_day;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE bus.cold_exports SET restored_at = NULL WHERE queue_name = p_queue AND day = p_day;
    RETURN n;
END;
$$;

-- What cold storage holds and what waits for it, per (queue, day).
CREATE OR REPLACE FUNCTION bus.cold_catalog()
RETURNS TABLE (queue_name text, day date, state text, rows bigint, bytes bigint, file text, exported_at timestamptz,
               pruned_at timestamptz, restored_rows bigint, note text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.queue_name, e.day,
           CASE WHEN e.pruned_at IS NOT NULL THEN 'pruned' WHEN e.pruning_at IS NOT NULL THEN 'pruning'
                WHEN e.verified_at IS NOT NULL THEN 'verified' ELSE 'unverified' END,
           e.rows, e.bytes, e.file, e.exported_at, e.pruned_at,
           (SELECT count(*) FROM bus.restored_archive r WHERE r.queue_name = e.queue_name AND r.day = e.day), e.note
      FROM bus.cold_exports e
    UNION ALL
    SELECT p.queue_name, p.day, 'waiting', p.rows, NULL, NULL, NULL, NULL, 0, 'past retention, not exported yet'
      FROM bus.cold_pending(100000) p
     WHERE NOT EXISTS (SELECT 1 FROM bus.cold_exports e WHERE e.queue_name = p.queue_name AND e.day = p.day)
    ORDER BY 2, 1
$$;

COMMENT ON FUNCTION bus.cold_cutoff() IS 'UTC days before this one are past retention (exportable, then prunable).';
COMMENT ON FUNCTION bus.cold_lines(text, date) IS 'A queue''s live archive rows of a UTC day, as cold-file lines in msg_id order.';
COMMENT ON FUNCTION bus.cold_digest(text, date) IS 'Count, msg_id range and checksum of a queue''s live archive rows of a UTC day.';
COMMENT ON FUNCTION bus.cold_pending(int) IS '(queue, day) past retention whose rows have no verified export.';
COMMENT ON FUNCTION bus.cold_record(text, date, text, bigint, text, text, bigint) IS
    'Records a read-back export; refused unless its rows are exactly the live rows. The day becomes prunable.';
COMMENT ON FUNCTION bus.cold_unverify(text, date, text) IS 'A damaged or missing file: the day is not prunable until exported again.';
COMMENT ON FUNCTION bus.cold_restore_lines(text, date, text[]) IS 'Restores exported lines next to the live archives (rows restored before are skipped).';
COMMENT ON FUNCTION bus.cold_unrestore(text, date) IS 'Drops a restored day (its file stays).';
COMMENT ON FUNCTION bus.cold_catalog() IS 'Exported, pruned, restored and waiting (queue, day) pairs.';

REVOKE EXECUTE ON FUNCTION bus.cold_cutoff(), bus._cold_table(text), bus.cold_lines(text, date), bus.cold_digest(text, date),
    bus.cold_pending(int), bus.cold_record(text, date, text, bigint, text, text, bigint),
    bus.cold_unverify(text, date, text), bus.cold_restore_lines(text, date, text[]), bus.cold_unrestore(text, date),
    bus.cold_catalog() FROM PUBLIC;
GRANT SELECT ON bus.restored_archive TO svc_centralcloud;

-- bus.alerts() rows about cold storage: archive rows a day past retention still in the live archives
-- (not exported, or exported and not pruned), and exports found damaged.
CREATE OR REPLACE FUNCTION bus._cold_alerts()
RETURNS TABLE (severity text, subject text, message text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q       text;
    behind  boolean;
    waiting text[] := '{}';
BEGIN
    FOR q IN SELECT queue_name FROM bus.queues ORDER BY 1 LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM pgmq.%I WHERE archived_at < $1)', 'a_' || q)
           INTO behind USING ((bus.cold_cutoff() - 1)::timestamp AT TIME ZONE 'UTC');
        IF behind THEN
            waiting := waiting || q;
        END IF;
    END LOOP;
    IF cardinality(waiting) > 0 THEN
        RETURN QUERY SELECT 'warning'::text, 'cold storage'::text,
            format('archive rows older than %s days wait for export to cold storage (%s); nothing past retention is deleted until exported',
                   coalesce(bus.setting('retention_days'), '90')::int + 1, array_to_string(waiting, ', ')),
            'run orchestrator archive export (the daemon does it hourly); orchestrator archive list shows what waits'::text;
    END IF;
    RETURN QUERY SELECT 'warning'::text, 'cold storage: ' || e.queue_name || ' ' || e.day, e.note,
                        'orchestrator archive export writes the day again while its rows are in the archive; '
                        'orchestrator archive verify checks every file'::text
                   FROM bus.cold_exports e
                  WHERE e.verified_at IS NULL AND e.pruning_at IS NULL AND e.note IS NOT NULL;
END;
$$;
COMMENT ON FUNCTION bus._cold_alerts() IS 'bus.alerts() rows about cold storage (rows waiting for export, damaged files).';
REVOKE EXECUTE ON FUNCTION bus._cold_alerts() FROM PUBLIC;
