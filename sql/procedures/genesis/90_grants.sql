-- svc_genesis (the worker) works only through these functions; limits are the owner's to set.
REVOKE ALL ON ALL TABLES IN SCHEMA genesis FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA genesis FROM PUBLIC;
GRANT USAGE ON SCHEMA genesis TO svc_genesis;
GRANT EXECUTE ON FUNCTION
    genesis.effective_limits(jsonb),
    genesis.start_execution(text, text, text, text, text, jsonb, text, double precision, text, text),
    genesis.claim(text, text, text, text, text, jsonb, text, double precision, text, text),
    genesis.finish_execution(text, jsonb),
    genesis.prune_executions(int)
TO svc_genesis;
GRANT SELECT ON genesis.recent_executions, genesis.limits TO svc_genesis;
