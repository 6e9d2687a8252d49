"""`orchestrator doctor`: what the configured server lacks, each with its fix."""

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
    out: list[Check] = []
    try:
        conn = connect(admin_conninfo(s, "postgres"), connect_timeout=5)
    except psycopg.Error as e:
        return [Check("connect", False, f"{redact(admin_conninfo(s))}: {str(e).strip().splitlines()[0]}",
                      "start the server (make db) or fix DB_HOST/DB_PORT/DB_USER/DB_PASSWORD")]
    with conn:
        def setting(n: str) -> str:
            r = conn.execute("SELECT current_setting(%s, true) AS v", (n,)).fetchone()
            return r["v"] or ""

        ver = int(setting("server_version_num") or 0)
        out.append(Check("server version", ver >= 150000, setting("server_version"), "use PostgreSQL 15 or newer"))
        su = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()["rolsuper"]
        out.append(Check("admin is superuser", su, "current_user superuser" if su else "not a superuser",
                         "migrate needs a superuser to create roles and extensions: set DB_USER to one"))
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
            w2j = True
        except psycopg.Error as e:
            w2j = False
            detail = str(e).strip().splitlines()[0]
        out.append(Check("wal2json output plugin", w2j, "works" if w2j else detail,
                         "install postgresql-15-wal2json on the server"))
        lag = conn.execute("""SELECT slot_name, wal_status,
                                     pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS behind
                                FROM pg_replication_slots WHERE slot_type = 'logical'""").fetchall()
        for r in lag:
            ok = r["wal_status"] in ("reserved", "extended")
            out.append(Check(f"CDC slot {r['slot_name']}", ok, f"{r['behind']} behind, wal_status {r['wal_status']}",
                             "read it (orchestrator autonomous cdc) or drop it; 'lost' means it fell past "
                             "max_slot_wal_keep_size and must be recreated"))
        dbs = {r["datname"] for r in conn.execute("SELECT datname FROM pg_database")}
        for d in DATABASES:
            out.append(Check(f"database {d}", d in dbs, "exists" if d in dbs else "missing", "run `orchestrator migrate`"))
        roles = {r["rolname"] for r in conn.execute("SELECT rolname FROM pg_roles")}
        for r in [owner_role(d) for d in DATABASES] + list(SERVICES.values()):
            out.append(Check(f"role {r}", r in roles, "exists" if r in roles else "missing", "run `orchestrator migrate`"))
    return out
