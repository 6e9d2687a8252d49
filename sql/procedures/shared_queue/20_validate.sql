-- Message validation on the send path: a BEFORE INSERT trigger on every queue table stamps the
-- envelope (id, type, source, created_at) when absent and refuses malformed messages with an
-- error that names the queue, the field and the fix. Nothing is enqueued when it raises.

-- Operator setting KEY (from bus.settings), or NULL.
CREATE OR REPLACE FUNCTION bus.setting(p_key text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$ SELECT value FROM bus.settings WHERE key = p_key $$;

-- The registered queue row for NAME, or a clear error (42P01) naming the known queues.
CREATE OR REPLACE FUNCTION bus._queue(p_queue text)
RETURNS bus.queues
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog
AS $$
DECLARE
    q bus.queues;
BEGIN
    SELECT * INTO q FROM bus.queues WHERE queue_name = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown queue "%"', left(p_queue, 60)
            USING ERRCODE = 'undefined_table',
                  HINT = 'Use one of: ' || (SELECT string_agg(queue_name, ', ' ORDER BY queue_name) FROM bus.queues)
                         || ' (orchestrator queues lists them).';
    END IF;
    RETURN q;
END;
$$;
COMMENT ON FUNCTION bus._queue(text) IS 'The bus.queues row of a queue; 42P01 with the list of queues when unknown.';

-- JSON type name of V as the rules spell it ('integer' for whole numbers).
CREATE OR REPLACE FUNCTION bus._json_type_ok(v jsonb, want text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE want
        WHEN 'any' THEN true
        WHEN 'integer' THEN jsonb_typeof(v) = 'number' AND (v::text)::numeric = trunc((v::text)::numeric)
        ELSE jsonb_typeof(v) = want
    END;
$$;

-- Validate MSG for queue P_QUEUE and return it with the envelope stamped; raises 22023 / 54000.
CREATE OR REPLACE FUNCTION bus.validate_message(p_queue text, p_msg jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog
AS $$
DECLARE
    q        bus.queues := bus._queue(p_queue);
    k        bus.queue_kinds;
    r        bus.message_fields;
    m        jsonb := p_msg;
    v        jsonb;
    mtype    text;
    nbytes   int;
    reply    bus.queues;
    tf       text;
BEGIN
    SELECT * INTO k FROM bus.queue_kinds WHERE kind = q.kind;
    IF m IS NULL OR jsonb_typeof(m) <> 'object' THEN
        RAISE EXCEPTION '%: a message must be a JSON object, got %', p_queue, coalesce(jsonb_typeof(m), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Send a JSON object such as {"agent_id": "...", ...}; see bus.message_fields for the fields of each queue.';
    END IF;
    nbytes := octet_length(m::text);
    IF nbytes > k.max_bytes THEN
        RAISE EXCEPTION '%: message is % bytes, over the limit of % bytes', p_queue, nbytes, k.max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store large payloads elsewhere (a file, a table) and send a reference to them.';
    END IF;

    -- (a dead letter keeps the message as it was: only the bus's own failure path writes them)
    IF q.kind <> 'dead_letters' AND bus._too_deep(m) THEN
        RAISE EXCEPTION '%: message is nested % levels deep, over the limit of %', p_queue, bus.json_depth(m),
                        coalesce(bus.setting('max_json_depth'), '64')
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Flatten the data, or send deeply nested data as a JSON string inside the message.';
    END IF;

    -- Envelope: stamp what is missing, check what is given.
    -- id: any non-empty string up to 128 characters (the seeds' UUIDs too); a ULID is stamped when absent
    IF NOT m ? 'id' OR m->'id' = 'null'::jsonb THEN
        m := m || jsonb_build_object('id', ops.ulid());
    ELSIF jsonb_typeof(m->'id') <> 'string' OR NOT (m->>'id') ~ bus.id_pattern() THEN
        RAISE EXCEPTION '%: field "id" must be a string of 1 to 128 printable characters, got %', p_queue, left((m->'id')::text, 60)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave "id" out and the bus assigns a ULID, or send a UUID.';
    END IF;
    -- the envelope time: created_at, or the seeds' timestamp; both are stamped (the same) when absent
    FOREACH tf IN ARRAY ARRAY['created_at', 'timestamp'] LOOP
        IF m ? tf AND m->tf <> 'null'::jsonb
           AND (jsonb_typeof(m->tf) <> 'string' OR NOT bus.is_timestamp(m->>tf)) THEN
            RAISE EXCEPTION '%: field "%" must be an ISO-8601 timestamp string (e.g. 2026-01-31T12:00:00Z), got %',
                            p_queue, tf, left((m->tf)::text, 60)
                USING ERRCODE = 'invalid_parameter_value', HINT = format('Leave "%s" out and the bus stamps it.', tf);
        END IF;
    END LOOP;
    m := m || jsonb_build_object(
        'created_at', coalesce(nullif(m->'created_at', 'null'::jsonb), nullif(m->'timestamp', 'null'::jsonb),
                               to_jsonb(to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))));
    m := m || jsonb_build_object('timestamp', coalesce(nullif(m->'timestamp', 'null'::jsonb), m->'created_at'));
    IF NOT m ? 'source' OR m->'source' = 'null'::jsonb THEN
        m := m || jsonb_build_object('source', current_user::text);
    ELSIF jsonb_typeof(m->'source') <> 'string' THEN
        RAISE EXCEPTION '%: field "source" must be a string, got %', p_queue, jsonb_typeof(m->'source')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the sending service, e.g. "singularity-1".';
    END IF;
    IF NOT m ? 'type' OR m->'type' = 'null'::jsonb THEN
        SELECT allowed->>0 INTO mtype FROM bus.message_fields
         WHERE kind = q.kind AND msg_type = '*' AND field = 'type';
        m := m || jsonb_build_object('type', mtype);
    END IF;
    mtype := m->>'type';
    -- seed 001's shorthand: an llm_request with a string "task" and no "messages" asks that task as
    -- one user message of task_type "general" unless it names one (its test sends {"agent_id": "test",
    -- "task": "hello"}); without "task", messages and task_type stay required
    IF q.kind = 'llm_requests' AND NOT m ? 'messages' AND jsonb_typeof(m->'task') = 'string' THEN
        m := m || jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', m->'task')));
        IF NOT m ? 'task_type' THEN
            m := m || '{"task_type": "general"}';
        END IF;
    END IF;

    FOR r IN
        SELECT * FROM bus.message_fields
         WHERE kind = q.kind AND (msg_type = '*' OR msg_type = mtype)
         ORDER BY msg_type = '*' DESC, required DESC, field
    LOOP
        IF r.default_value IS NOT NULL AND (NOT m ? r.field OR m->r.field = 'null'::jsonb) THEN
            m := m || jsonb_build_object(r.field, r.default_value);
        END IF;
        v := m->r.field;
        IF v IS NULL OR (v = 'null'::jsonb AND NOT r.nullable) THEN
            IF r.required THEN
                RAISE EXCEPTION '%: required field "%" is missing', p_queue, r.field
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('Add "%s" (a JSON %s) to the message.', r.field, r.json_type);
            ELSIF v IS NOT NULL THEN
                RAISE EXCEPTION '%: field "%" must not be null', p_queue, r.field
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('Leave "%s" out or give it a JSON %s.', r.field, r.json_type);
            END IF;
            CONTINUE;
        END IF;
        CONTINUE WHEN v = 'null'::jsonb;  -- nullable and null
        IF NOT bus._json_type_ok(v, r.json_type) THEN
            RAISE EXCEPTION '%: field "%" must be a JSON %, got %', p_queue, r.field, r.json_type, jsonb_typeof(v)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Send "%s" as a JSON %s.', r.field, r.json_type);
        END IF;
        IF r.nonempty AND (v = '""'::jsonb OR v = '[]'::jsonb OR v = '{}'::jsonb) THEN
            RAISE EXCEPTION '%: field "%" must not be empty', p_queue, r.field
                USING ERRCODE = 'invalid_parameter_value', HINT = format('Give "%s" a value.', r.field);
        END IF;
        IF r.allowed IS NOT NULL AND NOT r.allowed @> jsonb_build_array(v) THEN
            RAISE EXCEPTION '%: field "%" is %, which is not one of %', p_queue, r.field, left(v::text, 60), r.allowed::text
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Use one of %s for "%s".', r.allowed::text, r.field);
        END IF;
    END LOOP;

    -- A reply_to must name an existing queue of the kind that answers this one.
    IF m ? 'reply_to' AND k.result_kind IS NOT NULL THEN
        SELECT * INTO reply FROM bus.queues WHERE queue_name = m->>'reply_to';
        IF NOT FOUND OR reply.kind <> k.result_kind THEN
            RAISE EXCEPTION '%: reply_to "%" is not a % queue', p_queue, left(m->>'reply_to', 60), k.result_kind
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Use %s or a per-instance %s_<instance> queue (orchestrator instance add).', k.result_kind, k.result_kind);
        END IF;
    END IF;
    RETURN m;
END;
$$;
COMMENT ON FUNCTION bus.validate_message(text, jsonb) IS
    'Validates a message for a queue against bus.message_fields and returns it with its envelope stamped.';

-- Container nesting of V: 0 for a scalar, 1 for {} or [], 2 for [[]] (what a JSON decoder recurses).
CREATE OR REPLACE FUNCTION bus.json_depth(v jsonb)
RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo int := 0;      -- a container exists at level lo - 1 (or lo = 0)
    hi int := 1;
    mid int;
BEGIN
    IF jsonb_typeof(v) NOT IN ('object', 'array') THEN
        RETURN 0;
    END IF;
    -- jsonpath levels start at 0 (the root); depth = 1 + the deepest level holding a container
    WHILE bus._container_at(v, hi) LOOP
        lo := hi;
        hi := hi * 2;
    END LOOP;
    WHILE hi - lo > 1 LOOP
        mid := (lo + hi) / 2;
        IF bus._container_at(v, mid) THEN lo := mid; ELSE hi := mid; END IF;
    END LOOP;
    RETURN lo + 1;
END;
$$;
COMMENT ON FUNCTION bus.json_depth(jsonb) IS 'How deeply objects and arrays nest in a JSON value (0 for a scalar).';

-- True when V holds an object or array at jsonpath level P_LEVEL or deeper.
CREATE OR REPLACE FUNCTION bus._container_at(v jsonb, p_level int)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.jsonb_path_exists(v, pg_catalog.format(
           'strict $.**{%s to last} ? (@.type() == "object" || @.type() == "array")', p_level)::jsonpath);

-- True when MSG nests deeper than the max_json_depth setting (64): clients' JSON decoders recurse
-- per level, so a message 3,000 levels deep would pass here and then fail in every consumer.
CREATE OR REPLACE FUNCTION bus._too_deep(m jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bus._container_at(m, coalesce(bus.setting('max_json_depth'), '64')::int);
END;
$$;

-- What an envelope id may be: 1 to 128 printable characters (no control characters). One source:
-- bus.message_rules() hands it to clients.
CREATE OR REPLACE FUNCTION bus.id_pattern()
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN '^[^\x01-\x1f\x7f]{1,128}$';

-- What an envelope time may be: an ISO-8601 date and time (zone optional), e.g. 2026-01-31T12:00:00Z.
CREATE OR REPLACE FUNCTION bus.timestamp_pattern()
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$';

-- True when TXT parses as a timestamptz (PostgreSQL 15 has no pg_input_is_valid).
CREATE OR REPLACE FUNCTION bus.pg_input_is_valid_ts(txt text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM txt::timestamptz;
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END;
$$;

-- True when TXT is an ISO-8601 timestamp that names a real time (2026-02-30 is refused).
CREATE OR REPLACE FUNCTION bus.is_timestamp(txt text)
RETURNS boolean LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN txt ~ bus.timestamp_pattern() AND bus.pg_input_is_valid_ts(txt);

-- Who role P_ROLE is on the bus: {sender, service, instance_id, trusted}. Service roles are known
-- from bus.instances (Singularity instances) and the three fixed service roles; the database owner
-- (and superusers) are trusted: they may send on behalf of a service by naming it in
-- headers.sender (that is how a replay keeps the original sender). Any other role is itself.
CREATE OR REPLACE FUNCTION bus._identity(p_role name, p_headers jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inst text;
    said text := p_headers->>'sender';
BEGIN
    SELECT i.instance_id INTO inst FROM bus.instances i WHERE i.role = p_role;
    IF FOUND THEN
        RETURN jsonb_build_object('sender', p_role, 'service', 'singularity', 'instance_id', inst, 'trusted', false);
    ELSIF p_role IN ('svc_genesis', 'svc_nexus', 'svc_centralcloud') THEN
        RETURN jsonb_build_object('sender', p_role, 'service', substr(p_role, 5), 'trusted', false);
    ELSIF pg_has_role(p_role, (SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()), 'MEMBER') THEN
        IF said IS NOT NULL AND said <> p_role::text
           AND (said IN ('svc_genesis', 'svc_nexus', 'svc_centralcloud')
                OR EXISTS (SELECT 1 FROM bus.instances i WHERE i.role::text = said)) THEN
            RETURN bus._identity(said::name) || jsonb_build_object('on_behalf_by', p_role);
        END IF;
        RETURN jsonb_build_object('sender', p_role, 'trusted', true);
    END IF;
    RETURN jsonb_build_object('sender', p_role, 'trusted', false);
END;
$$;
COMMENT ON FUNCTION bus._identity(name, jsonb) IS
    'The sender identity the server stamps for a role (service, instance); the owner may name a service (replays).';

-- Stamp the sender's identity into message M of queue Q (kind K): a Singularity instance's
-- instance_id is its own (another one is refused, 42501); a service's heartbeat names that service
-- (42501 otherwise). Runs before shape validation (which then finds the fields it requires);
-- `source` is stamped after it (bus._check_message), so the size limit counts what was sent.
CREATE OR REPLACE FUNCTION bus._stamp_identity(p_queue text, p_kind text, m jsonb, ident jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    svc  text := ident->>'service';
    inst text := ident->>'instance_id';
BEGIN
    IF jsonb_typeof(m) IS DISTINCT FROM 'object' THEN
        RETURN m;   -- validation reports it
    END IF;
    IF svc IS NULL THEN
        RETURN m;
    END IF;
    IF inst IS NOT NULL AND EXISTS (SELECT 1 FROM bus.message_fields f WHERE f.kind = p_kind AND f.field = 'instance_id') THEN
        IF m ? 'instance_id' AND m->'instance_id' <> 'null'::jsonb AND m->>'instance_id' IS DISTINCT FROM inst THEN
            RAISE EXCEPTION '%: % is instance "%" and may not send as instance "%"', p_queue, ident->>'sender', inst,
                            left(coalesce(m->>'instance_id', (m->'instance_id')::text), 60)
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Leave "instance_id" out: the bus stamps the sending instance.';
        END IF;
        m := m || jsonb_build_object('instance_id', inst);
    END IF;
    IF EXISTS (SELECT 1 FROM bus.message_fields f WHERE f.kind = p_kind AND f.field = 'service') THEN
        IF m ? 'service' AND m->'service' <> 'null'::jsonb AND m->>'service' IS DISTINCT FROM svc THEN
            RAISE EXCEPTION '%: % is service "%" and may not send as service "%"', p_queue, ident->>'sender', svc,
                            left(coalesce(m->>'service', (m->'service')::text), 60)
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Each service reports only its own liveness; leave "service" out and the bus stamps it.';
        END IF;
        m := m || jsonb_build_object('service', svc);
    END IF;
    RETURN m;
END;
$$;
COMMENT ON FUNCTION bus._stamp_identity(text, text, jsonb, jsonb) IS
    'Stamps source / instance_id / service from the sending role; refuses speaking for another (42501).';

-- A request's reply_to must be one of the sender's own reply queues (42501): an instance cannot
-- route answers to another instance. Trusted senders (the operator) may name any reply queue.
CREATE OR REPLACE FUNCTION bus._check_reply_to(p_queue text, m jsonb, ident jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_inst text;
BEGIN
    IF NOT m ? 'reply_to' OR coalesce((ident->>'trusted')::boolean, false) THEN
        RETURN;
    END IF;
    SELECT q.instance_id INTO owner_inst FROM bus.queues q WHERE q.queue_name = m->>'reply_to';
    IF owner_inst IS DISTINCT FROM ident->>'instance_id' THEN
        RAISE EXCEPTION '%: reply_to "%" belongs to instance "%", not to % (instance "%")', p_queue,
                        left(m->>'reply_to', 60), coalesce(owner_inst, '?'), ident->>'sender', coalesce(ident->>'instance_id', 'none')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Name one of your own reply queues (or leave reply_to out for the default one of your instance).';
    END IF;
END;
$$;
COMMENT ON FUNCTION bus._check_reply_to(text, jsonb, jsonb) IS 'A request may ask for its reply only on its sender''s own queues.';

-- BEFORE INSERT trigger on every pgmq queue table managed by the bus: identity from the inserting
-- role (current_user: the trigger runs as the sender), then the shape rules, then reply_to; the
-- headers get the server's record of the sender and the request's hash (consumers cannot change
-- headers: they may update only vt, read_ct and last_read_at).
CREATE OR REPLACE FUNCTION bus._check_message()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- a partitioned queue's row arrives in a partition (q_<queue>_p2026_01_01): the queue is the root's
    q     text := substr(CASE WHEN TG_TABLE_NAME ~ '_p\d{4}_\d{2}_\d{2}$|_default$'
                              THEN coalesce((SELECT c.relname::text FROM pg_class c WHERE c.oid = pg_partition_root(TG_RELID)),
                                            TG_TABLE_NAME)
                              ELSE TG_TABLE_NAME END, 3);
    ident jsonb := bus._identity(current_user, NEW.headers);
BEGIN
    IF NEW.headers IS NOT NULL AND jsonb_typeof(NEW.headers) <> 'object' THEN
        RAISE EXCEPTION '%: headers must be a JSON object, got %', q, jsonb_typeof(NEW.headers)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Send headers as a JSON object, or none.';
    END IF;
    NEW.message := bus._stamp_identity(q, (SELECT b.kind FROM bus.queues b WHERE b.queue_name = q), NEW.message, ident);
    NEW.message := bus.validate_message(q, NEW.message);
    IF ident ? 'service' THEN
        NEW.message := NEW.message || jsonb_build_object('source', ident->>'service');
    END IF;
    PERFORM bus._check_reply_to(q, NEW.message, ident);
    NEW.headers := coalesce(NEW.headers, '{}'::jsonb) - 'on_behalf_by'
                   || jsonb_build_object('sender', ident->>'sender', 'content_sha256', ops.request_hash(NEW.message))
                   || CASE WHEN ident ? 'on_behalf_by' THEN jsonb_build_object('on_behalf_by', ident->>'on_behalf_by')
                           ELSE '{}'::jsonb END;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION bus._check_message() IS
    'Validation trigger on pgmq.q_* tables: stamps identity and envelope, refuses bad messages, records sender and hash.';

-- All rules as one JSON document, for clients that validate before they send.
CREATE OR REPLACE FUNCTION bus.message_rules()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
    SELECT jsonb_build_object(
        -- who the caller is on the bus: the client stamps and checks instance_id / service as the server does
        'identity', bus._identity(current_user),
        'queues', (SELECT jsonb_object_agg(queue_name, kind) FROM bus.queues),
        'queue_instances', (SELECT jsonb_object_agg(queue_name, instance_id) FROM bus.queues),
        'id_pattern', bus.id_pattern(), 'timestamp_pattern', bus.timestamp_pattern(),
        'max_json_depth', coalesce(bus.setting('max_json_depth'), '64')::int,
        'kinds', (SELECT jsonb_object_agg(k.kind, jsonb_build_object(
                      'role', k.role, 'result_kind', k.result_kind, 'max_bytes', k.max_bytes,
                      'max_attempts', k.max_attempts,
                      'fields', coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'msg_type', f.msg_type, 'field', f.field, 'json_type', f.json_type,
                          'required', f.required, 'nullable', f.nullable, 'nonempty', f.nonempty,
                          'allowed', f.allowed, 'default', f.default_value) ORDER BY f.msg_type = '*' DESC, f.required DESC, f.field)
                        FROM bus.message_fields f WHERE f.kind = k.kind), '[]'::jsonb)))
                    FROM bus.queue_kinds k));
$$;
COMMENT ON FUNCTION bus.message_rules() IS 'The validation rules and queue registry as JSON (the Python client mirrors them).';
