-- The hash of what a request asks for (DESIGN.md 8b): every dedupe by a request id stores it, so
-- the same id with other content is a conflict, never the earlier answer. The envelope (id, times,
-- source, instance, reply_to, type) is left out: a re-sent request is the same request. jsonb's
-- text form is canonical (keys sorted, one spelling per value), so every database computes the
-- same hash for the same message: shared_queue stamps it into headers.content_sha256 at send.
CREATE OR REPLACE FUNCTION ops.request_hash(p_msg jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
           (p_msg OPERATOR(pg_catalog.-) '{id,created_at,timestamp,source,instance_id,reply_to,type}'::text[])::text,
           'UTF8')), 'hex');
COMMENT ON FUNCTION ops.request_hash(jsonb) IS
    'sha256 (hex) of a message without its envelope: what a request asks for, for id-reuse conflicts.';
