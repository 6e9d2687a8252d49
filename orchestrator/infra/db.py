"""Connections: who connects where (embedded or external), psycopg 3 pools with a health check."""

from __future__ import annotations

import json
import logging
import time
from functools import cache

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestrator.infra.cluster import Cluster
from orchestrator.infra.config import SERVICES, Settings, owner_role
from orchestrator.infra.output import UserError
from orchestrator.infra.secrets import role_password

log = logging.getLogger(__name__)


def _as_user(url: str, user: str, password: str | None) -> str:
    """URL with USER's credentials (the URL's own password is kept only when the URL names USER)."""
    d = conninfo_to_dict(url)
    if d.get("user") != user:
        d["user"] = user
        d.pop("password", None)
        if password:
            d["password"] = password
    return make_conninfo(**d)


def _at_override(s: Settings, dbname: str, user: str, password: str | None) -> str | None:
    """DBNAME's own URL (e.g. SHARED_QUEUE_DB_URL, or SHARED_QUEUE_HOST/PORT) with USER's credentials: every
    role connects to where that database is, as itself (the URL's user is used only when it is USER)."""
    override = s.database_url_override(dbname)
    return _as_user(override, user, password) if override else None


_OWN = object()  # admin_conninfo's default server: the one DBNAME lives on


def _url_on(s: Settings, server: str | None) -> str | None:
    """A configured database URL on SERVER (a Settings.server key), or None."""
    from orchestrator.infra.config import DATABASES, server_key

    for d in DATABASES:
        url = s.database_url_override(d)
        if url and server_key(url) == server:
            return url
    return None


def admin_conninfo(s: Settings, dbname: str = "postgres", server=_OWN) -> str:
    """A superuser connection to DBNAME on SERVER (a Settings.server key; by default the server DBNAME lives
    on, and `postgres` the bus's): that server's DB_ADMIN_URLS entry, else its database URL as DB_USER with
    DB_PASSWORD, else DB_HOST/DB_PORT. Used only by migrate, doctor, cluster tools and tests."""
    if s.external:
        key = s.server(dbname) if server is _OWN else server
        admin = s.admin_url(key) if key else None
        if admin:
            return make_conninfo(**{**conninfo_to_dict(admin), "dbname": dbname})
        url = (s.database_url_override(dbname) if server is _OWN else None) or (_url_on(s, key) if key else None)
        if url:
            return make_conninfo(**{**conninfo_to_dict(_as_user(url, s.db_user or "postgres", s.db_password)),
                                    "dbname": dbname})
        host, port = s.default_server
        return make_conninfo(host=host, port=port,
                             user=s.db_user or "postgres", password=s.db_password or "", dbname=dbname)
    return Cluster(s).superuser_conninfo(dbname)


PINNED_SEARCH_PATH = "pg_catalog, pg_temp"


def superuser_conn(s: Settings, dbname: str, autocommit: bool = True, server=_OWN) -> psycopg.Connection:
    """The superuser's connection to DBNAME (a service database), with search_path pinned to
    pg_catalog, pg_temp before any statement runs.

    A service database's owner role controls `public` and every schema it owns: the superuser must
    never resolve a name there (an owner-made function or operator would run as the superuser).
    Use this only for SQL that touches nothing an owner role can write or replace (extensions,
    roles, grants, the superuser's own vault/cdc schemas, DROP OWNED); read owner-controlled data
    as the owner role instead (owner_conninfo / role_conninfo).
    """
    return connect(admin_conninfo(s, dbname, server), autocommit=autocommit,
                   options="-c search_path=" + PINNED_SEARCH_PATH.replace(" ", "\\ "))


def role_conninfo(s: Settings, dbname: str, role: str, password: str | None = None) -> str:
    """ROLE's connection to DBNAME over TCP with its password (scram-sha-256): where DBNAME's own URL says
    when one is set (operator commands too), else the configured server or the embedded cluster."""
    override = s.database_url_override(dbname)
    if override and conninfo_to_dict(override).get("user") == role:
        return override
    pw = password if password is not None else role_password(s, role)
    if pw is None:
        raise UserError(f"no password known for role {role}; run `orchestrator migrate` to create it")
    if override:
        return _at_override(s, dbname, role, pw)
    if s.external:
        host, port = s.default_server
    else:
        host, port = "127.0.0.1", Cluster(s).port
    return make_conninfo(host=host, port=port, user=role, password=pw, dbname=dbname,
                         application_name=f"orchestrator:{role}")


def read_conninfo(s: Settings, dbname: str, role: str) -> str:
    """ROLE's connection for read-only reports on DBNAME: its read replica's URL (e.g. CENTRALCLOUD_READ_DB_URL,
    a standby of an HA pair with target_session_attrs=standby) when one is set, else role_conninfo."""
    url = s.read_urls.get(dbname)
    if not url:
        return role_conninfo(s, dbname, role)
    return _as_user(url, role, role_password(s, role))


def service_role(service: str, instance: str = "default") -> str:
    """The LOGIN role of SERVICE (a Singularity instance other than `default` has its own)."""
    base = SERVICES[service]
    return base if instance in ("default", "") else f"{base}_{instance}"


def owner_conninfo(s: Settings, dbname: str) -> str:
    return role_conninfo(s, dbname, owner_role(dbname))


def system_id(conninfo: str) -> str:
    """A short name for the server and database CONNINFO reaches (host, port, database; no credentials): the
    page sends it so that a client can tell its own system's page from another checkout's on the same port."""
    import hashlib

    d = conninfo_to_dict(conninfo)
    where = f"{d.get('host') or d.get('hostaddr') or ''}:{d.get('port') or 5432}/{d.get('dbname') or ''}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def redact(conninfo: str) -> str:
    d = conninfo_to_dict(conninfo)
    if d.get("password"):
        d["password"] = "***"
    return make_conninfo(**d)


def connect(conninfo: str, autocommit: bool = True, **kw) -> psycopg.Connection:
    return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row, **kw)


def connect_retry(conninfo: str, deadline_s: float = 30.0, **kw) -> psycopg.Connection:
    """Connect, retrying with capped exponential backoff while the server is away."""
    delay, end = 0.1, time.monotonic() + deadline_s
    while True:
        try:
            return connect(conninfo, **kw)
        except psycopg.OperationalError as e:
            if time.monotonic() >= end:
                raise
            log.warning("database unavailable (%s); retrying in %.1fs", str(e).strip().splitlines()[0], delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


# A connection that went back to the pool less than this long ago is handed out without a probe.
CHECK_AFTER_IDLE_S = 1.0


class _Pool(ConnectionPool):
    """Checkout probes connections that sat idle (a restart may have killed them) and never sleeps.

    psycopg_pool's own `check=` loop sleeps 0, 1, 2, 4, 8, 16 s after consecutive dead connections, so
    after a burst of dropped connections clients slept on long after the server was fine (measured:
    nothing served for 25 s, then PoolTimeout; tests/py/test_chaos_workers.py). Here a dead connection
    goes straight back (the pool replaces it) and the next one is taken at once.
    """

    def getconn(self, timeout: float | None = None) -> psycopg.Connection:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            try:
                conn = super().getconn(timeout=max(0.0, deadline - time.monotonic()))
            except PoolTimeout:
                raise PoolTimeout(f"couldn't get a connection from {self.name} after {limit:.1f}s; "
                                  "is the database up? (orchestrator status)") from None
            if time.monotonic() - getattr(conn, "_orch_returned", 0.0) <= CHECK_AFTER_IDLE_S:
                return conn
            try:
                ConnectionPool.check_connection(conn)
                return conn
            except Exception:  # noqa: BLE001 - a dead connection: the pool discards and replaces it
                self.putconn(conn)

    def putconn(self, conn: psycopg.Connection) -> None:
        """Stamp the return time here, not in a `reset=` callback: with one, psycopg_pool hands every return
        to its worker thread, and the next checkout waits on that thread (measured: +0.3 ms per call)."""
        conn._orch_returned = time.monotonic()
        super().putconn(conn)


class Undecodable(str):
    """A json/jsonb value this process could not decode (e.g. nested deeper than Python's recursion limit):
    the value is the reason. Returned instead of raising, so one bad row never fails a whole batch."""


def _tolerant_loads(data):
    try:
        return json.loads(data)
    except (RecursionError, ValueError) as e:
        return Undecodable(f"{type(e).__name__}: {str(e)[:200] or 'nested too deeply for this client'}")


def _configure(conn: psycopg.Connection) -> None:
    set_json_loads(_tolerant_loads, conn)


def _reconnect_again(pool: ConnectionPool) -> None:
    if not pool.closed:
        pool.check()


def make_pool(conninfo: str, min_size: int = 1, max_size: int = 4, name: str = "pool") -> ConnectionPool:
    """A pool that probes idle connections before handing them out, so a restart never yields a dead one.

    Connections used within the last second skip the probe (it would double every round trip); if one
    of those died with the server, the caller's single retry (Bus._run) gets a fresh one.
    """
    return _Pool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=_configure,
        # psycopg_pool's reconnect backoff doubles without a cap (1, 2, 4, 8 s ...) and clients already
        # waiting are not woken by a new attempt: give an attempt up after 5 s and start a fresh one
        # at once, so a restarted server is picked up within ~2 s, not after a long sleep.
        reconnect_timeout=5,
        reconnect_failed=_reconnect_again,
        name=name,
        open=True,
    )


@cache
def _cached_pool(conninfo: str, max_size: int) -> ConnectionPool:
    return make_pool(conninfo, max_size=max_size)


def shared_pool(conninfo: str, max_size: int = 4) -> ConnectionPool:
    """One pool per conninfo per process."""
    return _cached_pool(conninfo, max_size)
