-- depends: 0001_executions
-- Trust (DESIGN.md 8b): an execution records who asked (the bus's headers.sender) and the hash of what
-- was asked (headers.content_sha256), so a request id reused for other code, or by another sender, is
-- answered with a conflict error instead of the stored result. claim/start_execution gain those two
-- parameters at the end, with defaults, so a worker of the previous version keeps working meanwhile.
ALTER TABLE genesis.executions ADD COLUMN sender text, ADD COLUMN request_sha256 text;
COMMENT ON COLUMN genesis.executions.sender IS 'The role that sent the request (bus headers.sender).';
COMMENT ON COLUMN genesis.executions.request_sha256 IS 'ops.request_hash of the request: the same id with other content is a conflict.';
DROP FUNCTION IF EXISTS genesis.start_execution(text, text, text, text, text, jsonb, text, double precision);
DROP FUNCTION IF EXISTS genesis.claim(text, text, text, text, text, jsonb, text, double precision);
