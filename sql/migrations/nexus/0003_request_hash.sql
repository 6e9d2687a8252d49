-- depends: 0001_nexus
-- Trust (DESIGN.md 8b): a held approval/question and a budget reservation record who asked (the bus's
-- headers.sender) and the hash of what was asked (headers.content_sha256). A request id reused with
-- another diff, question or prompt, or by another sender, is a conflict answered with an error:
-- never the earlier decision, never the earlier reservation. The functions gain those two parameters
-- at the end, with defaults, so a worker of the previous version keeps working during an upgrade.
ALTER TABLE nexus.hitl_items ADD COLUMN sender text, ADD COLUMN request_sha256 text;
COMMENT ON COLUMN nexus.hitl_items.sender IS 'The role that sent the request (bus headers.sender).';
COMMENT ON COLUMN nexus.hitl_items.request_sha256 IS 'ops.request_hash of the request: the same id with other content is a conflict.';
ALTER TABLE nexus.reservations ADD COLUMN sender text, ADD COLUMN request_sha256 text;
DROP FUNCTION IF EXISTS nexus.hitl_claim(text, text, bigint, int, double precision, jsonb, text, double precision);
DROP FUNCTION IF EXISTS nexus.admit(text, text, text, text, int, int);
