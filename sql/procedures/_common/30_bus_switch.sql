-- SHARED_QUEUE_ENABLED=false (seed 001): the system runs without the shared queue. `orchestrator
-- migrate` writes the switch into every database's ops.settings; SQL that talks to the bus (the
-- outbox drain, the inbox, CentralCloud's jobs) waits instead, says why, and loses nothing.
-- ops.bus_off() is a definer (ops.settings is the owner's alone) granted to the service roles that
-- need it; it is not made in `postgres`, whose owner is the superuser (no superuser-owned definers).
DO $do$
BEGIN
    IF current_database() = 'postgres' THEN
        RETURN;
    END IF;
    EXECUTE $f$
CREATE OR REPLACE FUNCTION ops.bus_off()
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'waiting: the shared queue is turned off (SHARED_QUEUE_ENABLED=false); nothing was sent or read and '
           || 'every message stays where it is. Set SHARED_QUEUE_ENABLED=true and run orchestrator migrate to resume'
     WHERE (SELECT s.value FROM ops.settings s WHERE s.key = 'shared_queue_enabled') = 'false';
$$$f$;
    COMMENT ON FUNCTION ops.bus_off() IS 'Why SQL waits for the bus (SHARED_QUEUE_ENABLED=false), or NULL when it is on.';
    REVOKE EXECUTE ON FUNCTION ops.bus_off() FROM PUBLIC;
END
$do$;
