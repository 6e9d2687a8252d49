ALTER TABLE centralcloud._items ALTER COLUMN packages TYPE text[]
    USING ARRAY(SELECT jsonb_array_elements_text(packages));
