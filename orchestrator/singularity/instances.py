"""Singularity instances and the AutonomousWorker calls (seed 003): each call is one SQL function.

An instance X is the database `singularity_X` with its own LOGIN role `svc_singularity_X`, its own
migrations, pg_cron schedules, outbox, CDC slot, key file and per-instance reply/inbox queues in
shared_queue. `default` is the database `singularity`.
"""

from __future__ import annotations

import logging
import re

import psycopg
from psycopg import sql

from orchestrator.infra.config import Settings
from orchestrator.infra.db import (
    admin_conninfo,
    connect,
    owner_conninfo,
    role_conninfo,
    service_role,
    superuser_conn,
)

log = logging.getLogger(__name__)

INSTANCE_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")

# `orchestrator autonomous <command>` -> the job core.run_job runs.
JOBS = {"learn-now": "learn_patterns", "knowledge-now": "update_knowledge", "sync-now": "sync_learning",
        "assign-now": "assign_tasks", "drain-now": "drain_outbox", "inbox-now": "consume_inbox",
        "metrics-now": "refresh_metrics", "cleanup-now": "cleanup_logs", "archive-now": "archive_tasks",
        "heartbeat-now": "heartbeat"}


class InstanceError(RuntimeError):
    """An instance operation was refused; the message says what to do."""


def database(instance: str = "default") -> str:
    """The database of INSTANCE."""
    return "singularity" if instance in ("default", "") else f"singularity_{instance}"


def check_id(instance: str) -> str:
    if instance != "default" and not INSTANCE_RE.match(instance):
        raise InstanceError(f"invalid instance id {instance!r}: use 1-16 characters a-z and 0-9, starting with a letter")
    return instance


def service_conn(s: Settings, instance: str = "default") -> psycopg.Connection:
    """The instance's service-role connection (what pg_cron jobs run as)."""
    check_id(instance)
    return connect(role_conninfo(s, database(instance), service_role("singularity", instance)))


def owner_conn(s: Settings, instance: str = "default") -> psycopg.Connection:
    """The instance database owner's connection (decrypts sessions)."""
    return connect(role_conninfo(s, database(instance), "own_singularity"))


# -- instances -------------------------------------------------------------------------------
def add_instance(s: Settings, instance: str, progress=lambda _m: None) -> str:
    """Create instance INSTANCE (idempotent): role, bus registration and queues, database, migrations,
    procedures, schedules. Returns the database name."""
    from orchestrator.infra.migrate import Target, ensure_role, migrate

    check_id(instance)
    if instance == "default":
        raise InstanceError("`default` is the database singularity, created by `orchestrator migrate`")
    role = service_role("singularity", instance)
    with connect(admin_conninfo(s, "postgres")) as admin:
        ensure_role(admin, s, role)
    with connect(owner_conninfo(s, "shared_queue")) as sq:  # queues must belong to the shared_queue owner
        sq.execute("SELECT bus.ensure_instance(%s, %s)", (instance, role)).fetchall()
    migrate(s, progress=progress, only=[Target("shared_queue", "shared_queue"),
                                        Target(database(instance), "singularity")])
    return database(instance)


def list_instances(s: Settings) -> list[dict]:
    """Registered instances with their database, role and outbox depth (each read as the owner of the
    database it lives in: bus.instances and outbox.messages are the owner roles' tables)."""
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        rows = sq.execute("""SELECT i.instance_id, i.role, i.created_at,
                                    (SELECT count(*) FROM bus.queues q WHERE q.instance_id = i.instance_id) AS queues
                               FROM bus.instances i ORDER BY i.instance_id""").fetchall()
    with connect(admin_conninfo(s, "postgres")) as pg:
        dbs = {r["datname"] for r in pg.execute("SELECT datname FROM pg_catalog.pg_database")}
    out = []
    for r in rows:
        db = database(r["instance_id"]) if INSTANCE_RE.match(r["instance_id"]) or r["instance_id"] == "default" else None
        r = {**r, "database": db, "exists": db in dbs, "outbox": None}
        if db is None:
            r["outbox"] = "not an instance id (as own_shared_queue: DELETE FROM bus.instances WHERE instance_id = ...)"
        elif db in dbs:
            try:
                with owner_conn(s, r["instance_id"]) as c:
                    r["outbox"] = c.execute("SELECT count(*) AS n FROM outbox.messages").fetchone()["n"]
            except psycopg.Error as e:  # shown instead of a count: e.g. not migrated yet (orchestrator migrate)
                r["outbox"] = f"unreadable: {str(e).strip().splitlines()[0][:80]}"
        out.append(r)
    return out


def remove_instance(s: Settings, instance: str) -> None:
    """Drop instance INSTANCE: its schedules, CDC slot, database, queues and role (for tests and cleanup).

    Superuser SQL runs only in `postgres` and, for DROP OWNED, with search_path pinned
    (superuser_conn); the bus's own functions and tables are used as the shared_queue owner."""
    check_id(instance)
    if instance == "default":
        raise InstanceError("the default instance cannot be removed")
    db, role = database(instance), service_role("singularity", instance)
    with connect(admin_conninfo(s, "postgres")) as pg:
        pg.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE starts_with(jobname, %s)", (f"{db}:",))
        pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                   (db,))
        pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                   (f"cdc_{db}",))
        pg.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        has_role = pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        for r in sq.execute("SELECT queue_name FROM bus.queues WHERE instance_id = %s", (instance,)).fetchall():
            sq.execute("SELECT bus.drop_queue(%s)", (r["queue_name"],))
        sq.execute("DELETE FROM bus.instances WHERE instance_id = %s", (instance,))
        if has_role:  # grants on pgmq's extension objects were made by the shared_queue owner: it revokes them
            sq.execute(sql.SQL("REVOKE ALL ON SCHEMA pgmq, bus, ops FROM {}").format(sql.Identifier(role)))
            sq.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA pgmq, bus FROM {}").format(sql.Identifier(role)))
    if not has_role:
        return
    with connect(admin_conninfo(s, "postgres")) as pg:
        for d in [r["datname"] for r in pg.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()]:
            try:
                with (superuser_conn(s, d) if d != "postgres" else connect(admin_conninfo(s, "postgres"))) as c:
                    c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            except psycopg.Error as e:  # DROP ROLE below names what still depends on the role
                log.warning("instance remove: DROP OWNED BY %s in %s failed: %s", role, d, e)
        pg.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def rotate_key(s: Settings, instance: str = "default", reencrypt: bool = True) -> dict:
    """Add a new session key to INSTANCE's key file; optionally re-encrypt every session with it.

    vault.rotate_key() is superuser SQL (it writes the key file with COPY TO PROGRAM), in the
    superuser's own schema vault, on a connection whose search_path is pinned; re-encryption is the
    owner's (core.reencrypt_sessions)."""
    check_id(instance)
    with superuser_conn(s, database(instance)) as c:
        key_id = c.execute("SELECT vault.rotate_key() AS k").fetchone()["k"]
    n = 0
    if reencrypt:
        with owner_conn(s, instance) as c:
            n = c.execute("SELECT core.reencrypt_sessions() AS n").fetchone()["n"]
    return {"key_id": key_id, "reencrypted": n}


# -- the AutonomousWorker ------------------------------------------------------------------------
def run_job(s: Settings, name: str, instance: str = "default") -> str:
    """core.run_job(NAME) in INSTANCE: 'ok: ...' or 'failed: <reason>'."""
    with service_conn(s, instance) as c:
        return c.execute("SELECT core.run_job(%s) AS r", (name,)).fetchone()["r"]


def queue_status(s: Settings, instance: str = "default") -> list[dict]:
    with service_conn(s, instance) as c:
        return c.execute("SELECT * FROM core.queue_status()").fetchall()


def jobs_status(s: Settings, instance: str = "default", cron: bool = False) -> list[dict]:
    """core.jobs_status(); with CRON, also pg_cron's own last run of each job (cron.job_run_details,
    readable by the superuser only)."""
    with service_conn(s, instance) as c:
        rows = c.execute("SELECT * FROM core.jobs_status()").fetchall()
    if cron:
        db = database(instance)
        with connect(admin_conninfo(s, "postgres")) as pg:
            got = {r["jobname"].split(":", 1)[1]: r for r in pg.execute(
                """SELECT DISTINCT ON (j.jobname) j.jobname, d.status AS cron_status, d.start_time AS cron_start,
                          round(extract(epoch FROM d.end_time - d.start_time)::numeric * 1000, 1) AS cron_ms,
                          left(d.return_message, 60) AS cron_message
                     FROM cron.job j JOIN cron.job_run_details d USING (jobid)
                    WHERE j.jobname LIKE %s ORDER BY j.jobname, d.start_time DESC""", (f"{db}:%",))}
        rows = [{**r, **{k: v for k, v in got.get(r["job"], {}).items() if k != "jobname"}} for r in rows]
    return rows


def cdc(s: Settings, instance: str = "default", what: str = "all", consume: bool = False, limit: int = 100) -> list[dict]:
    """Changes from the instance's CDC slot: what = all | patterns | sessions."""
    fn = {"all": "core.get_cdc_changes", "patterns": "core.get_pattern_changes",
          "sessions": "core.get_session_changes"}[what]
    with service_conn(s, instance) as c:
        return c.execute(sql.SQL("SELECT * FROM {}(%s, %s)").format(sql.SQL(fn)), (consume, limit)).fetchall()
