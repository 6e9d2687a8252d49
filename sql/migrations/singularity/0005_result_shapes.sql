-- depends: 0001_autonomous
-- Analysis results in every shape agents send (seed 003 inserts whatever its analysis returned):
-- {"patterns": [...]}, {"pattern": ...}, one pattern object {"key": ...}, a list, or a bare key; a
-- pattern is an object with a non-empty string key, or that key as a string (docs/shapes.md). A result
-- with nothing learnable in it, or a malformed pattern, is still refused (23514).
CREATE OR REPLACE FUNCTION core._patterns_ok(a jsonb)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_typeof(a) = 'array' AND NOT jsonb_path_exists(a,
    '$[*] ? ((@.type() == "string" && @ == "") || (@.type() != "string" && @.type() != "object")
             || (@.type() == "object" && (!exists(@.key) || @.key.type() != "string" || @.key == "")))');

CREATE OR REPLACE FUNCTION core._result_is_learnable(r jsonb)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN jsonb_typeof(r) = 'string' THEN r #>> '{}' <> ''
    WHEN jsonb_typeof(r) = 'array' THEN core._patterns_ok(r)
    WHEN jsonb_typeof(r) <> 'object' THEN false
    WHEN r ? 'patterns' THEN core._patterns_ok(r->'patterns')
    WHEN r ? 'pattern' THEN core._patterns_ok(jsonb_build_array(r->'pattern'))
    WHEN r ? 'key' THEN core._patterns_ok(jsonb_build_array(r))
    ELSE false END;

ALTER TABLE core.analysis_results DROP CONSTRAINT result_needs_patterns_array_of_objects_with_key;
ALTER TABLE core.analysis_results ADD CONSTRAINT result_needs_patterns_see_docs_shapes_md
    CHECK (core._result_is_learnable(result));
COMMENT ON TABLE core.analysis_results IS 'What agents found; result in any of the shapes of docs/shapes.md ("Analysis result").';
