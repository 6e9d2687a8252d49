-- Read-only analytics over the archives (what the seeds did with Ecto schemas), for CentralCloud.

-- (Re)build bus.archived_messages as UNION ALL over every managed archive table and the restored rows.
CREATE OR REPLACE FUNCTION bus._rebuild_archive_view()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    body text;
BEGIN
    -- days restored from cold storage (orchestrator archive restore) are archives too; a restored row
    -- still in the live archive (its day half pruned) is shown once
    SELECT string_agg(format(
        'SELECT %L::text AS queue_name, msg_id, read_ct, enqueued_at, archived_at, message->>%L AS msg_type, message FROM pgmq.%I
         UNION ALL
         SELECT r.queue_name, r.msg_id, r.read_ct, r.enqueued_at, r.archived_at, r.message->>%L, r.message FROM bus.restored_archive r
          WHERE r.queue_name = %L AND NOT EXISTS (SELECT 1 FROM pgmq.%I a WHERE a.msg_id = r.msg_id)',
        queue_name, 'type', 'a_' || queue_name, 'type', queue_name, 'a_' || queue_name), E'\nUNION ALL\n' ORDER BY queue_name)
      INTO body FROM bus.queues;
    IF body IS NULL THEN
        body := 'SELECT NULL::text AS queue_name, NULL::bigint AS msg_id, NULL::int AS read_ct, NULL::timestamptz AS enqueued_at, '
             || 'NULL::timestamptz AS archived_at, NULL::text AS msg_type, NULL::jsonb AS message WHERE false';
    END IF;
    EXECUTE 'CREATE OR REPLACE VIEW bus.archived_messages AS ' || body;
    COMMENT ON VIEW bus.archived_messages IS 'Every archived message of every managed queue (read-only analytics).';
    GRANT SELECT ON bus.archived_messages TO svc_centralcloud;
    PERFORM bus._ensure_analytics_views();
END;
$$;

-- Views over bus.archived_messages; created once it exists.
CREATE OR REPLACE FUNCTION bus._ensure_analytics_views()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CREATE OR REPLACE VIEW bus.archive_daily AS
    SELECT queue_name, msg_type, date_trunc('day', enqueued_at) AS day, count(*) AS messages,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM archived_at - enqueued_at) * 1000) AS p50_latency_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM archived_at - enqueued_at) * 1000) AS p95_latency_ms,
           max(read_ct) AS max_read_ct
      FROM bus.archived_messages
     GROUP BY 1, 2, 3;
    COMMENT ON VIEW bus.archive_daily IS 'Archived messages per queue, type and day with enqueue-to-archive latency percentiles.';

    CREATE OR REPLACE VIEW bus.approval_rates AS
    SELECT date_trunc('day', enqueued_at) AS day, count(*) AS decisions,
           count(*) FILTER (WHERE (message->>'approved')::boolean) AS approved,
           round(avg(CASE WHEN (message->>'approved')::boolean THEN 1.0 ELSE 0.0 END), 4) AS approval_rate
      FROM bus.archived_messages
     WHERE msg_type = 'approval_response'
     GROUP BY 1;
    COMMENT ON VIEW bus.approval_rates IS 'Approval decisions per day and the share approved.';

    CREATE OR REPLACE VIEW bus.questions_per_agent AS
    SELECT message->>'agent_id' AS agent_id, date_trunc('day', enqueued_at) AS day, count(*) AS questions
      FROM bus.archived_messages
     WHERE msg_type = 'question_request'
     GROUP BY 1, 2;
    COMMENT ON VIEW bus.questions_per_agent IS 'Questions asked per agent per day.';

    GRANT SELECT ON bus.archive_daily, bus.approval_rates, bus.questions_per_agent TO svc_centralcloud;
END;
$$;
REVOKE EXECUTE ON FUNCTION bus._rebuild_archive_view(), bus._ensure_analytics_views() FROM PUBLIC;
