-- Helpers shared by every Singularity procedure file.

-- This database's instance id: 'default' for `singularity`, X for `singularity_X`.
CREATE OR REPLACE FUNCTION core.instance_id()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN current_database() = 'singularity' THEN 'default'
            ELSE substr(current_database(), length('singularity_') + 1) END;

-- A queue of kind KIND that belongs to this instance (reply and inbox queues carry a suffix).
CREATE OR REPLACE FUNCTION core.instance_queue(p_kind text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN core.instance_id() = 'default' THEN p_kind ELSE p_kind || '_' || core.instance_id() END;

-- ISO-8601 UTC text of a timestamp, as the bus envelope writes it.
CREATE OR REPLACE FUNCTION core._iso(p_at timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- Queue MESSAGE for QUEUE in the caller's transaction; returns the message id (a ULID).
CREATE OR REPLACE FUNCTION outbox.enqueue(p_queue text, p_message jsonb)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mid text;
BEGIN
    IF p_message IS NULL OR jsonb_typeof(p_message) <> 'object' THEN
        RAISE EXCEPTION 'outbox: a message must be a JSON object, got %', coalesce(jsonb_typeof(p_message), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a jsonb object such as {"type": "..."}.';
    END IF;
    INSERT INTO outbox.messages (queue, message) VALUES (p_queue, p_message) RETURNING id INTO mid;
    RETURN mid;
END;
$$;

-- ULID defaults (ops.ulid is a repeatable procedure, so the migration cannot reference it).
ALTER TABLE core.tasks ALTER COLUMN id SET DEFAULT ops.ulid();
ALTER TABLE core.agent_sessions ALTER COLUMN id SET DEFAULT ops.ulid();
ALTER TABLE outbox.messages ALTER COLUMN id SET DEFAULT ops.ulid();
