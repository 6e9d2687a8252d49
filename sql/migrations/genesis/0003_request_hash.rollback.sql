DROP FUNCTION IF EXISTS genesis.start_execution(text, text, text, text, text, jsonb, text, double precision, text, text);
DROP FUNCTION IF EXISTS genesis.claim(text, text, text, text, text, jsonb, text, double precision, text, text);
ALTER TABLE genesis.executions DROP COLUMN IF EXISTS sender, DROP COLUMN IF EXISTS request_sha256;
