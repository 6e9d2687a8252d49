-- Message validation on the send path: a BEFORE INSERT trigger on every queue table stamps the
-- envelope (id, type, source, created_at) when absent and refuses malformed messages with an
-- error that names the queue, the field and the fix. Nothing is enqueued when it raises.

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

    -- Envelope: stamp what is missing, check what is given.
    IF NOT m ? 'id' OR m->'id' = 'null'::jsonb THEN
        m := m || jsonb_build_object('id', ops.ulid());
    ELSIF jsonb_typeof(m->'id') <> 'string' OR NOT ops.is_ulid(m->>'id') THEN
        RAISE EXCEPTION '%: field "id" must be a ULID string (26 Crockford base32 characters), got %', p_queue, left((m->'id')::text, 60)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave "id" out and the bus assigns one, or generate a ULID.';
    END IF;
    IF NOT m ? 'created_at' OR m->'created_at' = 'null'::jsonb THEN
        m := m || jsonb_build_object('created_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    ELSIF jsonb_typeof(m->'created_at') <> 'string' OR NOT bus.pg_input_is_valid_ts(m->>'created_at') THEN
        RAISE EXCEPTION '%: field "created_at" must be an ISO-8601 timestamp string, got %', p_queue, left((m->'created_at')::text, 60)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave "created_at" out and the bus stamps it.';
    END IF;
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

    FOR r IN
        SELECT * FROM bus.message_fields
         WHERE kind = q.kind AND (msg_type = '*' OR msg_type = mtype)
         ORDER BY msg_type = '*' DESC, required DESC, field
    LOOP
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

-- BEFORE INSERT trigger on every pgmq queue table managed by the bus.
CREATE OR REPLACE FUNCTION bus._check_message()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    NEW.message := bus.validate_message(substr(TG_TABLE_NAME, 3), NEW.message);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION bus._check_message() IS 'Validation trigger on pgmq.q_* tables: stamps the envelope, refuses bad messages.';

-- All rules as one JSON document, for clients that validate before they send.
CREATE OR REPLACE FUNCTION bus.message_rules()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
    SELECT jsonb_build_object(
        'queues', (SELECT jsonb_object_agg(queue_name, kind) FROM bus.queues),
        'kinds', (SELECT jsonb_object_agg(k.kind, jsonb_build_object(
                      'role', k.role, 'result_kind', k.result_kind, 'max_bytes', k.max_bytes,
                      'max_attempts', k.max_attempts,
                      'fields', coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'msg_type', f.msg_type, 'field', f.field, 'json_type', f.json_type,
                          'required', f.required, 'nullable', f.nullable, 'nonempty', f.nonempty,
                          'allowed', f.allowed) ORDER BY f.msg_type = '*' DESC, f.required DESC, f.field)
                        FROM bus.message_fields f WHERE f.kind = k.kind), '[]'::jsonb)))
                    FROM bus.queue_kinds k));
$$;
COMMENT ON FUNCTION bus.message_rules() IS 'The validation rules and queue registry as JSON (the Python client mirrors them).';
