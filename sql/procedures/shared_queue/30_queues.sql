-- Queue lifecycle, owned by the shared_queue owner role: create idempotently (pgmq.create),
-- attach validation, wake-ups and autovacuum tuning, and grant exactly the flow table.

-- The LOGIN roles of SERVICE that act on queue Q (a reply queue: only its instance's role).
CREATE OR REPLACE FUNCTION bus._service_roles(p_service text, q bus.queues)
RETURNS SETOF name
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
    SELECT i.role
      FROM bus.instances i
     WHERE p_service = 'singularity' AND (q.instance_id IS NULL OR i.instance_id = q.instance_id)
    UNION ALL
    SELECT ('svc_' || p_service)::name WHERE p_service <> 'singularity';
$$;

-- Every service LOGIN role the bus knows about.
CREATE OR REPLACE FUNCTION bus._all_service_roles()
RETURNS SETOF name
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
    SELECT role FROM bus.instances
    UNION SELECT unnest(ARRAY['svc_genesis', 'svc_nexus', 'svc_centralcloud']::name[]);
$$;

-- Re-grant queue P_QUEUE's tables from scratch according to bus.flows (one transaction: atomic).
CREATE OR REPLACE FUNCTION bus.apply_grants(p_queue text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    q     bus.queues := bus._queue(p_queue);
    qt    text := 'q_' || p_queue;
    at    text := 'a_' || p_queue;
    role_ name;
    f     bus.flows;
BEGIN
    FOR role_ IN SELECT * FROM bus._all_service_roles() LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_);
        EXECUTE format('REVOKE ALL ON pgmq.%I, pgmq.%I FROM %I', qt, at, role_);
        EXECUTE format('REVOKE ALL ON SEQUENCE pgmq.%I FROM %I', qt || '_msg_id_seq', role_);
    END LOOP;
    EXECUTE format('REVOKE ALL ON pgmq.%I, pgmq.%I FROM PUBLIC', qt, at);
    EXECUTE format('REVOKE ALL ON SEQUENCE pgmq.%I FROM PUBLIC', qt || '_msg_id_seq');
    FOR f IN SELECT * FROM bus.flows WHERE kind = q.kind LOOP
        FOR role_ IN SELECT * FROM bus._service_roles(f.service, q) LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_);
            IF f.action = 'send' THEN
                -- pgmq.send is INSERT ... RETURNING msg_id: insert plus reading back the id only.
                EXECUTE format('GRANT INSERT, SELECT (msg_id) ON pgmq.%I TO %I', qt, role_);
            ELSE
                -- consumers move vt and count reads (pgmq.read, set_vt), never the message or its
                -- headers (the server's record of the sender): those change only through bus._fail
                EXECUTE format('GRANT SELECT, UPDATE (vt, read_ct, last_read_at), DELETE ON pgmq.%I TO %I', qt, role_);
                EXECUTE format('GRANT SELECT, INSERT ON pgmq.%I TO %I', at, role_);
            END IF;
        END LOOP;
    END LOOP;
    -- Every service role may count any queue (pgmq.metrics / metrics_all, pgmq clients' own monitoring:
    -- getAllMetrics): the ids, visibility and enqueue times, never a message or its headers.
    FOR role_ IN SELECT * FROM bus._all_service_roles() LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_);
        EXECUTE format('GRANT SELECT (msg_id, vt, enqueued_at) ON pgmq.%I TO %I', qt, role_);
        EXECUTE format('GRANT SELECT ON SEQUENCE pgmq.%I TO %I', qt || '_msg_id_seq', role_);
    END LOOP;
    -- CentralCloud: read-only on every archive, for analytics.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'svc_centralcloud') THEN
        EXECUTE format('GRANT SELECT ON pgmq.%I TO svc_centralcloud', at);
    END IF;
END;
$$;
COMMENT ON FUNCTION bus.apply_grants(text) IS 'Grants a queue''s tables to service roles exactly as bus.flows says.';

-- Wake-ups: one NOTIFY per INSERT statement on pgmq's channel 'pgmq.q_<queue>.INSERT' (the one
-- pgmq.enable_notify_insert uses, so any LISTEN client works). pgmq's own trigger updates a throttle
-- row per inserted message, which serializes concurrent senders on that row. A session that sets
-- bus.wake = 'after_commit' (the orchestrator's Bus) is not woken for here: it calls bus.wake() after its
-- commit, so its commit does not hold NOTIFY's database-wide commit lock (docs/throughput.md).
CREATE OR REPLACE FUNCTION bus._wake()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('bus.wake', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify('pgmq.' || TG_TABLE_NAME || '.INSERT', NULL);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION bus._wake() IS 'Statement trigger: wakes the queue''s listeners once per INSERT statement.';

-- Wake the listeners of P_QUEUES (managed queues only), in a transaction of its own after a commit
-- that inserted into them: such a transaction writes no WAL, so NOTIFY's commit lock is held for microseconds.
CREATE OR REPLACE FUNCTION bus.wake(p_queues text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('pgmq.q_' || q.queue_name || '.INSERT', NULL)
      FROM bus.queues q WHERE q.queue_name = ANY (p_queues);
$$;
COMMENT ON FUNCTION bus.wake(text[]) IS 'Notifies the listeners of the named queues (after the inserting commit).';

-- Put P_QUEUE's wake-up trigger in the state throttle P_THROTTLE_MS asks for (a no-op when it is):
-- 0 is the statement trigger bus_wake; more is pgmq's per-message trigger with that throttle.
CREATE OR REPLACE FUNCTION bus._set_wake(p_queue text, p_throttle_ms int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qt regclass := format('pgmq.%I', 'q_' || p_queue)::regclass;
    has_wake boolean := EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = qt AND t.tgname = 'bus_wake');
    pgmq_ms int := (SELECT t.throttle_interval_ms FROM pgmq.notify_insert_throttle t WHERE t.queue_name = p_queue);
BEGIN
    IF p_throttle_ms = 0 THEN
        IF pgmq_ms IS NOT NULL THEN
            PERFORM pgmq.disable_notify_insert(p_queue);
        END IF;
        IF NOT has_wake THEN
            EXECUTE format('CREATE TRIGGER bus_wake AFTER INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION bus._wake()', qt);
        END IF;
    ELSE
        IF has_wake THEN
            EXECUTE format('DROP TRIGGER bus_wake ON %s', qt);
        END IF;
        IF pgmq_ms IS DISTINCT FROM p_throttle_ms THEN
            PERFORM pgmq.enable_notify_insert(p_queue, p_throttle_ms);
        END IF;
    END IF;
END;
$$;
COMMENT ON FUNCTION bus._set_wake(text, int) IS 'Installs the wake-up trigger a notify throttle asks for on one queue.';

-- Create queue P_QUEUE of kind P_KIND (idempotent): pgmq queue + validation + notify + grants.
CREATE OR REPLACE FUNCTION bus.ensure_queue(p_queue text, p_kind text, p_instance text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
SET TimeZone = 'UTC'   -- partitions of a partitioned kind begin and end at UTC midnight (cold storage's days)
AS $$
DECLARE
    qt text := 'q_' || p_queue;
    throttle int := coalesce(bus.setting('notify_throttle_ms'), '0')::int;
    part text := (SELECT k.partition_interval FROM bus.queue_kinds k WHERE k.kind = p_kind);
BEGIN
    IF p_queue !~ '^[a-z][a-z0-9_]{2,46}$' THEN
        RAISE EXCEPTION 'invalid queue name "%"', left(p_queue, 60)
            USING ERRCODE = 'invalid_name', HINT = 'Queue names are 3-47 characters: a-z, 0-9 and _, starting with a letter.';
    END IF;
    INSERT INTO bus.queues (queue_name, kind, instance_id) VALUES (p_queue, p_kind, p_instance)
    ON CONFLICT (queue_name) DO UPDATE SET kind = EXCLUDED.kind, instance_id = EXCLUDED.instance_id;
    IF part IS NOT NULL AND to_regclass(format('pgmq.%I', qt)) IS NULL THEN
        -- pgmq's partitioned layout; pg_partman's own retention is switched off: it would drop unconsumed
        -- messages (q_) and archive rows not yet in cold storage (a_). bus.prune_partitions drops archives.
        PERFORM pgmq.create_partitioned(p_queue, part, NULL);
        UPDATE partman.part_config SET retention = NULL
         WHERE parent_table IN (format('pgmq.%I', qt), format('pgmq.%I', 'a_' || p_queue));
        -- pgmq indexes a partitioned queue by its partition column only: reads (vt), acks and deletes
        -- (msg_id) would scan every partition; cold storage reads an archive day in msg_id order
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (vt)', qt || '_vt_idx', qt);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (msg_id)', qt || '_msgid_idx', qt);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (msg_id)', 'a_' || p_queue || '_msgid_idx', 'a_' || p_queue);
    ELSIF NOT EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = p_queue AND m.is_partitioned) THEN
        PERFORM pgmq.create(p_queue);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = format('pgmq.%I', qt)::regclass
                                              AND tgname = 'bus_validate_message') THEN
        EXECUTE format('CREATE TRIGGER bus_validate_message BEFORE INSERT ON pgmq.%I
                        FOR EACH ROW EXECUTE FUNCTION bus._check_message()', qt);
    END IF;
    -- Wake consumers on insert: once per statement (throttle 0), or pgmq's throttled per-message trigger.
    PERFORM bus._set_wake(p_queue, throttle);
    -- Queue tables churn: vacuum them early so dead tuples stay bounded.
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = format('pgmq.%I', qt)::regclass) = 'r' THEN
    EXECUTE format('ALTER TABLE pgmq.%I SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 500,
                    autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.05)', qt);
    END IF;   -- a partitioned table takes no storage parameters (its partitions are one day each: small)
    PERFORM bus.apply_grants(p_queue);
    PERFORM bus._rebuild_archive_view();
END;
$$;
COMMENT ON FUNCTION bus.ensure_queue(text, text, text) IS 'Creates or repairs a managed queue; safe to call again.';

-- Register Singularity instance P_ID (LOGIN role P_ROLE) and create its reply and inbox queues.
CREATE OR REPLACE FUNCTION bus.ensure_instance(p_id text, p_role name)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    k text;
    qn text;
BEGIN
    IF EXISTS (SELECT 1 FROM bus.instances i WHERE i.instance_id = p_id AND i.bridge AND i.role <> p_role) THEN
        RAISE EXCEPTION 'instance id "%" is taken by a bridge (role %)', p_id,
                        (SELECT i.role FROM bus.instances i WHERE i.instance_id = p_id)
            USING ERRCODE = 'unique_violation', HINT = 'Pick another instance id ("nats" is the NATS bridge''s).';
    END IF;
    INSERT INTO bus.instances (instance_id, role) VALUES (p_id, p_role)
    ON CONFLICT (instance_id) DO UPDATE SET role = EXCLUDED.role;
    -- a bridge (nats.ensure_bridge) gets reply queues only: broadcasts are for Singularity instances
    FOR k IN SELECT qk.kind FROM bus.queue_kinds qk
              WHERE qk.role = 'result'
                 OR (qk.role = 'inbox' AND NOT (SELECT i.bridge FROM bus.instances i WHERE i.instance_id = p_id))
              ORDER BY qk.kind LOOP
        qn := CASE WHEN p_id = 'default' THEN k ELSE k || '_' || p_id END;
        PERFORM bus.ensure_queue(qn, k, p_id);
        RETURN NEXT qn;
    END LOOP;
    -- The instance may send to every shared request/event queue: re-grant those.
    PERFORM bus.apply_grants(queue_name) FROM bus.queues WHERE instance_id IS NULL;
    PERFORM bus.grant_common(p_role);
END;
$$;
COMMENT ON FUNCTION bus.ensure_instance(text, name) IS 'Registers a Singularity instance (or a bridge) and creates its reply queues.';

-- What every service role needs besides per-queue grants: schema usage, the rules, the notify stamp.
CREATE OR REPLACE FUNCTION bus.grant_common(p_role name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA pgmq, bus, ops TO %I', p_role);
    EXECUTE format('GRANT SELECT ON bus.queues, bus.queue_kinds, bus.message_fields, bus.instances, bus.settings TO %I', p_role);
    EXECUTE format('GRANT SELECT ON pgmq.meta, pgmq.notify_insert_throttle TO %I', p_role);
    EXECUTE format('GRANT UPDATE (last_notified_at) ON pgmq.notify_insert_throttle TO %I', p_role);
    -- the dead-letter path (definers that check the caller is a consumer of the queue)
    EXECUTE format('GRANT EXECUTE ON FUNCTION bus._bury(name, text, bigint, int, text),
                    bus._fail(name, text, bigint, int, text, int, double precision),
                    bus._give_back(name, text, bigint, int, double precision) TO %I', p_role);
END;
$$;
COMMENT ON FUNCTION bus.grant_common(name) IS 'Schema usage and catalog read access every service role needs.';

-- Set operator setting KEY (migrate calls this with values from env).
CREATE OR REPLACE FUNCTION bus.set_setting(p_key text, p_value text)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog
AS $$
    INSERT INTO bus.settings (key, value) VALUES (p_key, p_value)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
    WHERE bus.settings.value IS DISTINCT FROM EXCLUDED.value;
$$;
REVOKE EXECUTE ON FUNCTION bus.set_setting(text, text), bus.ensure_queue(text, text, text), bus._set_wake(text, int),
    bus.ensure_instance(text, name), bus.apply_grants(text), bus.grant_common(name) FROM PUBLIC;

-- Apply operator settings from env (migrate calls this): retention days and the notify throttle.
CREATE OR REPLACE FUNCTION bus.configure(p_retention_days int, p_notify_throttle_ms int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF p_retention_days IS NULL OR p_retention_days < 1 THEN
        RAISE EXCEPTION 'retention days must be >= 1, got %', p_retention_days
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Set SHARED_QUEUE_RETENTION_DAYS to a positive number of days.';
    END IF;
    IF p_notify_throttle_ms IS NULL OR p_notify_throttle_ms < 0 THEN
        RAISE EXCEPTION 'notify throttle must be >= 0 ms, got %', p_notify_throttle_ms
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Set SHARED_QUEUE_NOTIFY_THROTTLE_MS to 0 or more.';
    END IF;
    PERFORM bus.set_setting('retention_days', p_retention_days::text);
    PERFORM bus.set_setting('notify_throttle_ms', p_notify_throttle_ms::text);
    PERFORM bus._set_wake(q.queue_name, p_notify_throttle_ms) FROM bus.queues q ORDER BY q.queue_name;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus.configure(int, int) FROM PUBLIC;

-- SHARED_QUEUE_MAX_ATTEMPTS (migrate calls this): the attempts of every kind, or NULL for each kind's own.
CREATE OR REPLACE FUNCTION bus.configure_attempts(p_max_attempts int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_max_attempts IS NULL THEN
        DELETE FROM bus.settings s WHERE s.key = 'max_attempts';
    ELSIF p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max attempts must be >= 1, got %', p_max_attempts
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Set SHARED_QUEUE_MAX_ATTEMPTS to 1 or more, or unset it.';
    ELSE
        PERFORM bus.set_setting('max_attempts', p_max_attempts::text);
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus.configure_attempts(int) FROM PUBLIC;

-- Drop managed queue P_QUEUE and its archive (operator only); the archive view is rebuilt first.
CREATE OR REPLACE FUNCTION bus.drop_queue(p_queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    partitioned boolean := EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = p_queue AND m.is_partitioned);
    dropped boolean;
BEGIN
    PERFORM bus._queue(p_queue);
    DELETE FROM bus.queues WHERE queue_name = p_queue;
    PERFORM bus._rebuild_archive_view();
    dropped := pgmq.drop_queue(p_queue);
    IF partitioned THEN   -- pgmq leaves pg_partman's configuration and template tables behind
        DELETE FROM partman.part_config
         WHERE parent_table IN (format('pgmq.%I', 'q_' || p_queue), format('pgmq.%I', 'a_' || p_queue));
        EXECUTE format('DROP TABLE IF EXISTS partman.%I, partman.%I',
                       'template_pgmq_q_' || p_queue, 'template_pgmq_a_' || p_queue);
    END IF;
    RETURN dropped;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus.drop_queue(text) FROM PUBLIC;

-- Forget Singularity instance P_ID (orchestrator instance remove): drop its reply and inbox queues and
-- its registration; returns the queues dropped. Operator only. Its role's grants go with DROP OWNED.
CREATE OR REPLACE FUNCTION bus.forget_instance(p_id text)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text;
BEGIN
    IF p_id = 'default' THEN
        RAISE EXCEPTION 'the default instance cannot be removed' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Remove only instances made with orchestrator instance add.';
    END IF;
    FOR q IN SELECT b.queue_name FROM bus.queues b WHERE b.instance_id = p_id ORDER BY 1 LOOP
        PERFORM bus.drop_queue(q);
        RETURN NEXT q;
    END LOOP;
    DELETE FROM bus.instances i WHERE i.instance_id = p_id;
END;
$$;
COMMENT ON FUNCTION bus.forget_instance(text) IS 'Drops an instance''s queues and registration (operator only).';
REVOKE EXECUTE ON FUNCTION bus.forget_instance(text) FROM PUBLIC;
