-- ULIDs generated in SQL (seed 003's distributed ids): 48-bit ms timestamp + 80 random bits,
-- Crockford base32, 26 characters, lexicographically sortable by creation time.
CREATE OR REPLACE FUNCTION ops.ulid(p_at timestamptz DEFAULT clock_timestamp())
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ts   bigint := (extract(epoch FROM p_at) * 1000)::bigint;
    rnd  bit(80) := ('x' || encode(extensions.gen_random_bytes(10), 'hex'))::bit(80);
    head text := '';
    tail text := '';
    i    int;
BEGIN
    FOR i IN 1..10 LOOP
        head := substr(alphabet, (ts % 32)::int + 1, 1) || head;
        ts := ts / 32;
    END LOOP;
    FOR i IN 0..15 LOOP
        tail := tail || substr(alphabet, substring(rnd FROM i * 5 + 1 FOR 5)::int + 1, 1);
    END LOOP;
    RETURN head || tail;
END;
$$;
COMMENT ON FUNCTION ops.ulid(timestamptz) IS 'A new ULID (26 chars, Crockford base32), sortable by time.';

-- True when TXT is a well-formed ULID.
CREATE OR REPLACE FUNCTION ops.is_ulid(txt text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN txt ~ '^[0-7][0-9A-HJKMNP-TV-Z]{25}$';
