-- svc_nexus (the router and the page) works only through the functions and views below; the
-- configuration functions (set_*, user_*, signin_unblock) are for the owner (`orchestrator nexus ...`).
-- The page signs people in only through login_params + sign_in: it reads no hash (nexus.users,
-- _password_parts) and starts no session without the key.
REVOKE ALL ON ALL TABLES IN SCHEMA nexus FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA nexus FROM PUBLIC;
GRANT USAGE ON SCHEMA nexus TO svc_nexus;
GRANT EXECUTE ON FUNCTION
    nexus.plan(text, text),
    nexus.admit(text, text, text, text, int, int, text, text),
    nexus.settle(text, text, text, jsonb),
    nexus.admit_many(jsonb),
    nexus.settle_many(jsonb),
    nexus.hitl_claim(text, text, bigint, int, double precision, jsonb, text, double precision, text, text),
    nexus.hitl_conflict_response(text, text, text),
    nexus.hitl_leases_due(double precision),
    nexus.hitl_leased(text, int, double precision),
    nexus.hitl_decide(text, text, boolean, text, text),
    nexus.hitl_expire(),
    nexus.hitl_to_publish(text),
    nexus.hitl_published(text),
    nexus.hitl_pending(text, int),
    nexus.login_params(text, inet, bytea),
    nexus.sign_in(text, bytea, bytea, text, int, inet, bytea, bytea),
    nexus.session_get(bytea),
    nexus.session_page(bytea),
    nexus.session_flash(bytea, text),
    nexus.session_delete(bytea),
    nexus.release_stale_reservations(interval)
TO svc_nexus;
GRANT SELECT ON nexus.recent_calls, nexus.budget_today, nexus.calls_hourly, nexus.call_totals,
    nexus.hitl_recent, nexus.hitl_counts TO svc_nexus;
