-- Staging: keep a pattern's packages as the JSON array it came in (turned into text[] only when
-- grouped), which halves the cost of expanding a batch.
ALTER TABLE centralcloud._items ALTER COLUMN packages TYPE jsonb USING to_jsonb(packages);
