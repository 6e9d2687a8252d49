"""dblink from a service database to `shared_queue`: a foreign server `bus` plus user mappings.

SQL in Singularity and CentralCloud (pg_cron jobs, outbox drains) publishes to and reads from the bus
through `extensions.dblink('bus', ...)`, so it keeps working with no Python process running (DESIGN.md section 7).
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from orchestrator.infra.config import Settings
from orchestrator.infra.db import role_conninfo

SERVER = "bus"
# Database kinds whose SQL talks to shared_queue over dblink.
LINKED_KINDS = ("singularity", "centralcloud")


def _ensure_server(su: psycopg.Connection, server: str, opts: dict[str, str]) -> None:
    """Create or re-point dblink foreign server SERVER with OPTS; PUBLIC gets no USAGE."""
    row = su.execute("SELECT srvoptions FROM pg_catalog.pg_foreign_server WHERE srvname = %s", (server,)).fetchone()
    if row:
        have = {o.split("=", 1)[0] for o in row["srvoptions"] or []}
        parts = [sql.SQL("{} {} {}").format(sql.SQL("SET" if k in have else "ADD"), sql.Identifier(k),
                                             sql.Literal(v)) for k, v in opts.items()]
        su.execute(sql.SQL("ALTER SERVER {} OPTIONS ({})").format(sql.Identifier(server), sql.SQL(", ").join(parts)))
    else:
        su.execute(sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER dblink_fdw OPTIONS ({})").format(
            sql.Identifier(server),
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in opts.items())))
    su.execute(sql.SQL("REVOKE ALL ON FOREIGN SERVER {} FROM PUBLIC").format(sql.Identifier(server)))


def _map(su: psycopg.Connection, server: str, role: str, user: str, password: str) -> None:
    su.execute(sql.SQL("DROP USER MAPPING IF EXISTS FOR {} SERVER {}").format(sql.Identifier(role), sql.Identifier(server)))
    su.execute(sql.SQL("CREATE USER MAPPING FOR {} SERVER {} OPTIONS (user {}, password {})").format(
        sql.Identifier(role), sql.Identifier(server), sql.Literal(user), sql.Literal(password)))


def _shared_queue_opts(s: Settings, role: str, from_db: str) -> tuple[dict[str, str], str]:
    d = conninfo_to_dict(role_conninfo(s, "shared_queue", role))
    opts = {"host": str(d.get("host", "127.0.0.1")), "port": str(d.get("port", 5432)), "dbname": "shared_queue",
            "application_name": f"dblink:{from_db}"}
    # a multi-host URL of an HA bus: dblink (libpq) tries each host and keeps the one that takes writes
    for k in ("target_session_attrs", "connect_timeout", "sslmode"):
        if d.get(k):
            opts[k] = str(d[k])
    return opts, d["password"]


def ensure_bus_link(su: psycopg.Connection, s: Settings, dbname: str, service_role: str, owner: str) -> None:
    """As superuser in DBNAME: (re)point server `bus` at shared_queue; map SERVICE_ROLE and OWNER to
    SERVICE_ROLE's own credentials (scram over TCP, so dblink accepts it for non-superusers)."""
    opts, password = _shared_queue_opts(s, service_role, dbname)
    with su.transaction():
        _ensure_server(su, SERVER, opts)
        for role in dict.fromkeys([service_role, owner]):
            su.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER {} TO {}").format(sql.Identifier(SERVER),
                                                                             sql.Identifier(role)))
            _map(su, SERVER, role, service_role, password)


# In the `postgres` database: how ops.report_schedules() (pg_cron, as the superuser) reaches shared_queue.
REPORT_SERVER = "shared_queue_owner"


def ensure_report_link(su: psycopg.Connection, s: Settings) -> None:
    """As superuser in `postgres`: server `shared_queue_owner` and a user mapping of the superusers that
    run ops.report_schedules() (pg_cron's `postgres`, and whoever runs migrate) to own_shared_queue's own
    credentials. The report calls bus._report_schedules, which own_shared_queue owns and may replace:
    it must arrive as that owner, never as a superuser."""
    opts, password = _shared_queue_opts(s, "own_shared_queue", "postgres")
    with su.transaction():
        _ensure_server(su, REPORT_SERVER, opts)
        me = su.execute("SELECT current_user AS u").fetchone()["u"]
        for role in dict.fromkeys(["postgres", me]):
            if su.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone():
                _map(su, REPORT_SERVER, role, "own_shared_queue", password)


def refresh_schedule_report(s) -> bool:
    """Have pg_cron's jobs reported into shared_queue now (postgres:report_schedules does it each minute).
    On failure, say why on stderr and keep the last report; returns whether it was refreshed."""
    import sys

    import psycopg

    from orchestrator.infra.config import DATABASES
    from orchestrator.infra.db import admin_conninfo, connect

    try:
        for server in s.servers(DATABASES):   # each server's pg_cron reports its own databases' jobs
            with connect(admin_conninfo(s, "postgres", server)) as conn:
                conn.execute("SELECT ops.report_schedules()")
        return True
    except psycopg.Error as e:
        print(f"could not refresh the schedules' last runs ({str(e).strip()}); showing the last report. "
              "Is pg_cron loaded (orchestrator doctor)?", file=sys.stderr)
        return False
