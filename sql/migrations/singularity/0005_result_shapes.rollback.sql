ALTER TABLE core.analysis_results DROP CONSTRAINT IF EXISTS result_needs_patterns_see_docs_shapes_md;
ALTER TABLE core.analysis_results ADD CONSTRAINT result_needs_patterns_array_of_objects_with_key CHECK (
    coalesce(jsonb_typeof(result->'patterns'), 'missing') = 'array'
    AND NOT jsonb_path_exists(result, '$.patterns[*] ? (@.type() != "object" || !exists(@.key) || @.key.type() != "string" || @.key == "")'));
DROP FUNCTION IF EXISTS core._result_is_learnable(jsonb);
DROP FUNCTION IF EXISTS core._patterns_ok(jsonb);
