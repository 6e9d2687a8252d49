-- The SQL half of the Git jobs (the Git half is orchestrator/centralcloud_git.py): record an
-- export and announce it; record a template distribution and publish the changed files.

-- Record a knowledge export and send learning_exported to every knowledge_updates queue.
CREATE OR REPLACE FUNCTION centralcloud.record_export(p_repo text, p_branch text, p_commit text, p_artifacts int,
                                                      p_files text[], p_pushed boolean, p_pr_url text)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text;
    n int := 0;
BEGIN
    IF coalesce(p_branch, '') = '' OR coalesce(p_commit, '') = '' THEN
        RAISE EXCEPTION 'an export needs a branch and a commit'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Call it with what the Git export produced.';
    END IF;
    FOR q IN SELECT * FROM centralcloud._queues_of('knowledge_updates') LOOP
        PERFORM centralcloud._send(q, jsonb_build_object('type', 'learning_exported', 'branch', p_branch,
            'artifacts_count', p_artifacts, 'commit', p_commit, 'pr_url', p_pr_url));
        n := n + 1;
    END LOOP;
    INSERT INTO centralcloud.exports (repo, branch, commit, artifacts_count, files, pushed, pr_url)
    VALUES (p_repo, p_branch, p_commit, p_artifacts, p_files, p_pushed, p_pr_url);
    RETURN n;
END;
$$;
COMMENT ON FUNCTION centralcloud.record_export(text, text, text, int, text[], boolean, text) IS
    'Logs a knowledge export and publishes learning_exported to every instance.';

-- The commit of the last template distribution from P_GIT_URL (NULL: never distributed).
CREATE OR REPLACE FUNCTION centralcloud.last_template_commit(p_git_url text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commit FROM centralcloud.template_distributions WHERE git_url = p_git_url ORDER BY id DESC LIMIT 1 $$;

-- Publish templates_updated with P_FILES ([{path, hash, content}]) to every template_updates queue
-- (split so that a message stays under ~512 kB), record versions; returns messages sent per queue.
CREATE OR REPLACE FUNCTION centralcloud.record_templates(p_git_url text, p_commit text, p_files jsonb,
                                                         p_deleted text[] DEFAULT '{}')
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q text;
    chunks jsonb[] := '{}';
    cur jsonb := '[]';
    f jsonb;
    m jsonb;
    size_ int := 0;
    nq int := 0;
BEGIN
    IF coalesce(p_commit, '') = '' OR jsonb_typeof(p_files) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'template distribution needs a commit and an array of files'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass [{path, hash, content}, ...] and the commit they come from.';
    END IF;
    FOR f IN SELECT * FROM jsonb_array_elements(p_files) LOOP
        IF jsonb_typeof(f) <> 'object' OR coalesce(f->>'path', '') = '' OR f->'content' IS NULL THEN
            RAISE EXCEPTION 'template file entry % has no path or content', left(f::text, 80)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Each file is {path, hash, content}.';
        END IF;
        IF size_ > 0 AND size_ + octet_length(f::text) > 512 * 1024 THEN
            chunks := chunks || cur;
            cur := '[]';
            size_ := 0;
        END IF;
        cur := cur || jsonb_build_array(f);
        size_ := size_ + octet_length(f::text);
    END LOOP;
    IF jsonb_array_length(cur) > 0 OR (cardinality(chunks) = 0 AND cardinality(p_deleted) > 0) THEN
        chunks := chunks || cur;   -- nothing at all changed under the templates dir: no message
    END IF;
    FOR q IN SELECT * FROM centralcloud._queues_of('template_updates') LOOP
        FOREACH m IN ARRAY chunks LOOP
            PERFORM centralcloud._send(q, jsonb_build_object('type', 'templates_updated', 'git_url', p_git_url,
                'commit', p_commit, 'updated_files', m, 'deleted_files', to_jsonb(coalesce(p_deleted, '{}'))));
        END LOOP;
        nq := nq + 1;
    END LOOP;
    INSERT INTO centralcloud.templates AS t (path, version, hash, commit, deleted)
    SELECT e->>'path', 1, e->>'hash', p_commit, false FROM jsonb_array_elements(p_files) e
    ON CONFLICT (path) DO UPDATE SET version = t.version + 1, hash = EXCLUDED.hash, commit = EXCLUDED.commit,
        deleted = false, updated_at = now();
    UPDATE centralcloud.templates SET version = version + 1, hash = NULL, commit = p_commit, deleted = true, updated_at = now()
     WHERE path = ANY (p_deleted) AND NOT deleted;
    INSERT INTO centralcloud.template_distributions (git_url, commit, previous, files, queues, messages)
    VALUES (p_git_url, p_commit, centralcloud.last_template_commit(p_git_url),
            ARRAY(SELECT e->>'path' FROM jsonb_array_elements(p_files) e ORDER BY 1), nq, cardinality(chunks));
    RETURN cardinality(chunks);
END;
$$;
COMMENT ON FUNCTION centralcloud.record_templates(text, text, jsonb, text[]) IS
    'Publishes templates_updated (exactly the given files) to every instance and records the new versions.';

-- The latest scheduled time of Git job P_JOB at or before P_NOW (centralcloud.git_schedule).
CREATE OR REPLACE FUNCTION centralcloud.git_slot(p_job text, p_now timestamptz DEFAULT now())
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.date_bin(g.every, p_now - g.at, timestamptz '2000-01-01 00:00:00+00') + g.at
      FROM centralcloud.git_schedule g WHERE g.job = p_job;
$$;
COMMENT ON FUNCTION centralcloud.git_slot(text, timestamptz) IS 'The latest scheduled time of a Git job.';

-- Which of the configured Git jobs (P_CONFIGURED) are due: no run of them since their latest slot, so
-- a worker that was down catches up once when it starts.
CREATE OR REPLACE FUNCTION centralcloud.git_jobs_due(p_configured text[], p_now timestamptz DEFAULT now())
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.job FROM centralcloud.git_schedule g
     WHERE g.job = ANY (p_configured)
       AND NOT EXISTS (SELECT 1 FROM centralcloud.job_runs r
                        WHERE r.job = g.job AND r.started_at >= centralcloud.git_slot(g.job, p_now))
     ORDER BY g.job;
$$;
COMMENT ON FUNCTION centralcloud.git_jobs_due(text[], timestamptz) IS 'The configured Git jobs that are due now.';
