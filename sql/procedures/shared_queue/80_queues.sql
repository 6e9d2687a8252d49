-- Every queue of DESIGN.md section 5, the dead-letter queue, and the default instance's reply
-- queues. All idempotent (bus.ensure_queue), so this runs on every migrate.
SELECT bus.ensure_queue(kind, kind) FROM bus.queue_kinds WHERE role NOT IN ('result', 'inbox') ORDER BY kind;
SELECT bus.ensure_instance('default', 'svc_singularity');
SELECT bus.ensure_instance(instance_id, role) FROM bus.instances WHERE instance_id <> 'default' ORDER BY 1;
SELECT bus.grant_common(r) FROM bus._all_service_roles() AS r;
