-- depends: 0001_autonomous
-- Trust (DESIGN.md 8b): an agent's stored request keeps the hash of what it asked; a result is stored
-- against it only if it answers that request (results carry request_sha256, computed by the bus).
ALTER TABLE core.agent_results ADD COLUMN request_sha256 text;
COMMENT ON COLUMN core.agent_results.request_sha256 IS 'ops.request_hash of the request: a result for other content is refused.';
