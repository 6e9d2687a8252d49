"""dblink from a service database to `shared_queue`: a foreign server `bus` plus user mappings.

SQL in Singularity and CentralCloud (pg_cron jobs, outbox drains) publishes to and reads from the bus
through `extensions.dblink('bus', ...)`, so it keeps working with no Python process running (DESIGN.md section 7).
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from .config import Settings
from .db import role_conninfo

SERVER = "bus"
# Database kinds whose SQL talks to shared_queue over dblink.
LINKED_KINDS = ("singularity", "centralcloud")


def ensure_bus_link(su: psycopg.Connection, s: Settings, dbname: str, service_role: str, owner: str) -> None:
    """As superuser in DBNAME: (re)point server `bus` at shared_queue; map SERVICE_ROLE and OWNER to
    SERVICE_ROLE's own credentials (scram over TCP, so dblink accepts it for non-superusers)."""
    d = conninfo_to_dict(role_conninfo(s, "shared_queue", service_role))
    opts = {"host": str(d.get("host", "127.0.0.1")), "port": str(d.get("port", 5432)), "dbname": "shared_queue",
            "application_name": f"dblink:{dbname}"}
    with su.transaction():
        row = su.execute("SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (SERVER,)).fetchone()
        if row:
            have = {o.split("=", 1)[0] for o in row["srvoptions"] or []}
            parts = [sql.SQL("{} {} {}").format(sql.SQL("SET" if k in have else "ADD"), sql.Identifier(k),
                                                 sql.Literal(v)) for k, v in opts.items()]
            su.execute(sql.SQL("ALTER SERVER {} OPTIONS ({})").format(sql.Identifier(SERVER), sql.SQL(", ").join(parts)))
        else:
            su.execute(sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER dblink_fdw OPTIONS ({})").format(
                sql.Identifier(SERVER),
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in opts.items())))
        su.execute(sql.SQL("REVOKE ALL ON FOREIGN SERVER {} FROM PUBLIC").format(sql.Identifier(SERVER)))
        for role in dict.fromkeys([service_role, owner]):
            su.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER {} TO {}").format(sql.Identifier(SERVER),
                                                                             sql.Identifier(role)))
            su.execute(sql.SQL("DROP USER MAPPING IF EXISTS FOR {} SERVER {}").format(sql.Identifier(role),
                                                                                     sql.Identifier(SERVER)))
            su.execute(sql.SQL("CREATE USER MAPPING FOR {} SERVER {} OPTIONS (user {}, password {})").format(
                sql.Identifier(role), sql.Identifier(SERVER), sql.Literal(service_role), sql.Literal(d["password"])))
