"""Singularity instances, the operator's side: add, list, remove, rotate a key (the superuser and the
owner roles do this, like migrate). What an instance does lives in orchestrator.singularity.

An instance X is the database `singularity_X` with its own LOGIN role `svc_singularity_X`, its own
migrations, pg_cron schedules, outbox, CDC slot, key file and per-instance reply/inbox queues in
shared_queue. `default` is the database `singularity`.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from orchestrator.infra.config import INSTANCE_RE, Settings
from orchestrator.infra.db import (
    admin_conninfo,
    connect,
    owner_conninfo,
    role_conninfo,
    service_role,
    superuser_conn,
)
from orchestrator.infra.output import UserError

log = logging.getLogger(__name__)


class InstanceError(UserError):
    """An instance operation was refused; the message says what to do."""


def database(instance: str = "default") -> str:
    """The database of INSTANCE."""
    return "singularity" if instance in ("default", "") else f"singularity_{instance}"


def check_id(instance: str) -> str:
    if instance != "default" and not INSTANCE_RE.match(instance):
        raise InstanceError(f"invalid instance id {instance!r}: use 1-16 characters a-z and 0-9, starting with a letter")
    return instance


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
                               FROM bus.instances i WHERE NOT i.bridge ORDER BY i.instance_id""").fetchall()
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
        sq.execute("SELECT bus.forget_instance(%s)", (instance,)).fetchall()
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


