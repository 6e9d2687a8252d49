-- Included (\ir) first by tests/sql/<database>/99_definers.sql: the two lists the audit reads
-- (tests/sql/_shared/definer_audit.sql), with what every database that has dblink allows.
CREATE TEMP TABLE definer_allow (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE definer_todo (fn text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
INSERT INTO definer_allow
SELECT format('extensions.dblink_connect_u(%s)', args),
       'dblink''s own C function (extension member); EXECUTE only for the superuser'
  FROM unnest(ARRAY['text', 'text, text']) AS args
 WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink');
