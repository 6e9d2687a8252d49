DROP FUNCTION IF EXISTS nexus.hitl_claim(text, text, bigint, int, double precision, jsonb, text, double precision, text, text);
DROP FUNCTION IF EXISTS nexus.admit(text, text, text, text, int, int, text, text);
ALTER TABLE nexus.hitl_items DROP COLUMN IF EXISTS sender, DROP COLUMN IF EXISTS request_sha256;
ALTER TABLE nexus.reservations DROP COLUMN IF EXISTS sender, DROP COLUMN IF EXISTS request_sha256;
