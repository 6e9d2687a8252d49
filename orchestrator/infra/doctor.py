"""`orchestrator doctor`: what each configured server lacks, and each cross-server link, each with its fix."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from orchestrator.infra.config import DATABASES, SERVICES, Settings, owner_role
from orchestrator.infra.db import admin_conninfo, connect, redact


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run(s: Settings) -> list[Check]:
    """Every server's checks (named `<check> @ host:port` when the databases are on several servers),
    then the dblink links from each service database and each server's `postgres` to the bus."""
    plan = s.servers(DATABASES)
    out: list[Check] = []
    for server, dbs in plan.items():
        label = f" @ {server}" if len(plan) > 1 else ""
        checks = _server(s, server, dbs)
        out += [Check(c.name + label, c.ok, c.detail, c.fix) for c in checks]
    if all(c.ok for c in out if c.name.startswith("connect")):
        out += links(s)
    return out


def _server(s: Settings, server: str | None, dbs: list[str]) -> list[Check]:
    conninfo = admin_conninfo(s, "postgres", server)
    try:
        conn = connect(conninfo, connect_timeout=5)
    except psycopg.Error as e:
        return [Check("connect", False, f"{redact(conninfo)}: {str(e).strip().splitlines()[0]}",
                      "start the server (make db) or fix its entry in DB_ADMIN_URLS (or DB_USER/DB_PASSWORD)")]
    with conn:
        out = _settings_checks(conn) + _extension_checks(conn)
        present = {r["datname"] for r in conn.execute("SELECT datname FROM pg_database")}
        for d in dbs:
            out.append(Check(f"database {d}", d in present, "exists" if d in present else "missing",
                             "run `orchestrator migrate`"))
        roles = {r["rolname"] for r in conn.execute("SELECT rolname FROM pg_roles")}
        for r in [owner_role(d) for d in DATABASES] + list(SERVICES.values()):
            out.append(Check(f"role {r}", r in roles, "exists" if r in roles else "missing", "run `orchestrator migrate`"))
    return out


def _settings_checks(conn: psycopg.Connection) -> list[Check]:
    def setting(n: str) -> str:
        r = conn.execute("SELECT current_setting(%s, true) AS v", (n,)).fetchone()
        return r["v"] or ""

    out: list[Check] = []
    ver = int(setting("server_version_num") or 0)
    out.append(Check("server version", ver >= 150000, setting("server_version"), "use PostgreSQL 15 or newer"))
    su = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()["rolsuper"]
    out.append(Check("admin is superuser", su, "current_user superuser" if su else "not a superuser",
                     "migrate needs a superuser to create roles and extensions: set DB_USER (or the server's "
                     "DB_ADMIN_URLS entry) to one"))
    pre = setting("shared_preload_libraries")
    for lib in ("pg_cron", "pg_partman_bgw"):
        out.append(Check(f"preload {lib}", lib in pre, f"shared_preload_libraries = '{pre}'",
                         f"add {lib} to shared_preload_libraries in postgresql.conf and restart"))
    out.append(Check("cron.database_name", setting("cron.database_name") == "postgres",
                     setting("cron.database_name") or "(unset)", "set cron.database_name = 'postgres' and restart"))
    out.append(Check("wal_level", setting("wal_level") == "logical", setting("wal_level"),
                     "set wal_level = logical (CDC through wal2json) and restart"))
    slots = int(setting("max_replication_slots") or 0)
    out.append(Check("max_replication_slots", slots >= 5, str(slots), "set max_replication_slots >= 5 and restart"))
    keep = setting("max_slot_wal_keep_size")
    out.append(Check("max_slot_wal_keep_size", keep not in ("-1", ""), keep or "(unset)",
                     "bound WAL pinned by an unread CDC slot: set max_slot_wal_keep_size = '1GB'"))
    return out


def _extension_checks(conn: psycopg.Connection) -> list[Check]:
    out: list[Check] = []
    avail = {r["name"] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    for ext, pkg in (("pg_cron", "postgresql-15-cron"), ("pg_partman", "postgresql-15-partman"),
                     ("pgcrypto", "postgresql-contrib"), ("dblink", "postgresql-contrib"),
                     ("pgtap", "postgresql-15-pgtap")):
        out.append(Check(f"extension {ext}", ext in avail, "available" if ext in avail else "missing",
                         f"install the Debian package {pkg} on the server"))
    out.append(Check("extension pgmq", True, "available" if "pgmq" in avail else
                     "not packaged: migrate installs it from the pgmq PyPI package's SQL"))
    try:
        with conn.transaction():
            conn.execute("SELECT pg_create_logical_replication_slot('orchestrator_doctor', 'wal2json', true)")
            raise psycopg.Rollback()
        w2j, detail = True, "works"
    except psycopg.Error as e:
        w2j, detail = False, str(e).strip().splitlines()[0]
    out.append(Check("wal2json output plugin", w2j, detail, "install postgresql-15-wal2json on the server"))
    lag = conn.execute("""SELECT slot_name, wal_status,
                                 pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS behind
                            FROM pg_replication_slots WHERE slot_type = 'logical'""").fetchall()
    for r in lag:
        ok = r["wal_status"] in ("reserved", "extended")
        out.append(Check(f"CDC slot {r['slot_name']}", ok, f"{r['behind']} behind, wal_status {r['wal_status']}",
                         "read it (orchestrator autonomous cdc) or drop it; 'lost' means it fell past "
                         "max_slot_wal_keep_size and must be recreated"))
    return out


def _probe(conninfo: str, sql: str) -> str | None:
    """None when SQL (a dblink call) works on CONNINFO, else the first line of the error."""
    try:
        with connect(conninfo, connect_timeout=5) as c:
            c.execute(sql)
        return None
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0]


def links(s: Settings) -> list[Check]:
    """Each dblink path to the bus, tried for real: a service database's `bus` server as its service role
    (the outbox drain, CentralCloud's reads), and each server's `shared_queue_owner` (the schedule report)."""
    from orchestrator.infra.db import role_conninfo
    from orchestrator.infra.links import LINKED_KINDS, REPORT_SERVER, SERVER

    bus_at = s.server("shared_queue") or "the bus's server"
    fix = (f"run `orchestrator migrate` (it points the foreign server at {bus_at}); if it still fails, the bus's "
           "server must accept this server's address: a `host shared_queue all <address> scram-sha-256` line "
           "in its pg_hba.conf and listen_addresses covering it")
    from orchestrator.infra.migrate import instance_targets

    out: list[Check] = []
    linked = [(d, SERVICES[d]) for d in LINKED_KINDS]
    try:   # extra Singularity instances, each with its own link and role
        linked += [(t.dbname, t.service_role) for t in instance_targets(s)]
    except psycopg.Error:  # the instance registry unreadable: the server checks above already say why
        pass
    for d, role in linked:
        try:
            conninfo = role_conninfo(s, d, role)
        except RuntimeError as e:
            out.append(Check(f"link {d} -> shared_queue", False, str(e), "run `orchestrator migrate`"))
            continue
        err = _probe(conninfo, f"SELECT * FROM extensions.dblink('{SERVER}', 'SELECT 1') AS t(x int)")
        out.append(Check(f"link {d} -> shared_queue", err is None,
                         f"dblink server {SERVER} as {role}: " + (err or "works"), fix))
    for server in s.servers(DATABASES):
        err = _probe(admin_conninfo(s, "postgres", server),
                     f"SELECT * FROM extensions.dblink('{REPORT_SERVER}', 'SELECT 1') AS t(x int)")
        where = f"postgres @ {server}" if server else "postgres"
        out.append(Check(f"link {where} -> shared_queue", err is None,
                         f"dblink server {REPORT_SERVER} (the schedule report): " + (err or "works"), fix))
    return out
