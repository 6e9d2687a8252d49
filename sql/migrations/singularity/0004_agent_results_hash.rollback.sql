DROP FUNCTION IF EXISTS core.record_request(text, text, text, jsonb, text);
DROP FUNCTION IF EXISTS core.store_result(text, jsonb);
ALTER TABLE core.agent_results DROP COLUMN IF EXISTS request_sha256;
