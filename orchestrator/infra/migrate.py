"""`orchestrator migrate`: roles, databases, extensions, yoyo migrations, repeatable procedures, schedules.

Idempotent and safe to run while workers run or while another migrator runs (advisory lock).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from orchestrator.infra.config import DATABASES, SERVICES, Settings, owner_role
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo, superuser_conn
from orchestrator.infra.links import LINKED_KINDS, ensure_bus_link, ensure_report_link
from orchestrator.infra.secrets import role_password

log = logging.getLogger(__name__)

PGMQ_VERSION = "1.13.0"
MIGRATE_LOCK = 4_242_001  # pg_advisory_lock key, taken in the `postgres` database


@dataclass(frozen=True)
class Target:
    """One database to migrate: its name and the folder (kind) its SQL comes from."""

    dbname: str
    kind: str
    # `postgres` (pg_cron's database) is on every server: ON names a database whose server this one is on
    # ("" = the bus's server). Other databases are on the server their URL names (Settings.server).
    on: str = ""

    def server(self, s: Settings) -> str | None:
        """The key of the server this database is on (Settings.server)."""
        return s.server(self.on or self.dbname)

    def admin(self, s: Settings) -> str:
        """The superuser's connection to `postgres` on this database's server."""
        return admin_conninfo(s, "postgres", self.server(s))

    @property
    def owner(self) -> str:
        """Every database of a kind (instances, fresh copies) is owned by that kind's owner role."""
        return "postgres" if self.kind == "postgres" else owner_role(self.kind)

    @property
    def service_role(self) -> str:
        if self.kind == "shared_queue":
            return owner_role("shared_queue")
        if self.kind == "postgres":
            return "postgres"
        base = SERVICES[self.kind]
        if self.kind == "singularity" and self.dbname.startswith("singularity_"):
            return base + self.dbname[len("singularity"):]  # singularity_x -> svc_singularity_x
        return base


Progress = Callable[[str], None]


class Refused(RuntimeError):
    """Migrate refused something an owner role wrote (a schedule's run_as, an instance id); the
    message names it and the fix."""


def _q(ident: str) -> sql.Identifier:
    return sql.Identifier(ident)


# -- roles and databases ---------------------------------------------------------
def ensure_role(admin: psycopg.Connection, s: Settings, role: str) -> None:
    """Create LOGIN role ROLE if missing and (re)set its password from the secrets file, as a SCRAM verifier."""
    pw = role_password(s, role, create=True)
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    admin.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
        sql.SQL(verb), _q(role), sql.Literal(scram_verifier(admin, role, pw))))


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """What PostgreSQL stores for PASSWORD under scram-sha-256, computed here by libpq (PQencryptPasswordConn),
    so the plaintext never reaches SQL text or the server log."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def ensure_database(admin: psycopg.Connection, t: Target, service_roles: Iterable[str]) -> None:
    """Create T's database owned by its owner role; only its own roles may connect."""
    if t.kind == "postgres":
        admin.execute("REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC")
        return
    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (t.dbname,)).fetchone():
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(_q(t.dbname), _q(t.owner)))
    admin.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(_q(t.dbname)))
    for role in [t.owner, *service_roles]:
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(_q(t.dbname), _q(role)))


# -- pgmq -----------------------------------------------------------------------------------
def pgmq_sql() -> str:
    """pgmq's own install script, as bundled in the `pgmq` PyPI package (pgmq/sql/pgmq.sql)."""
    spec = importlib.util.find_spec("pgmq")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `pgmq` Python package is missing; run `make setup`")
    root = Path(next(iter(spec.submodule_search_locations)))
    version = (root / "sql" / "VERSION").read_text().strip()
    if version != PGMQ_VERSION:
        raise RuntimeError(f"pgmq package bundles SQL {version}, expected {PGMQ_VERSION}; pin pgmq==1.1.4")
    return (root / "sql" / "pgmq.sql").read_text()


CONTROL = f"""# pgmq {PGMQ_VERSION}: SQL from the pgmq PyPI package, written here by `orchestrator migrate`
comment = 'A lightweight message queue. Like AWS SQS and RSMQ but on Postgres.'
default_version = '{PGMQ_VERSION}'
relocatable = false
schema = 'pgmq'
superuser = true
"""


def install_pgmq(conn: psycopg.Connection, progress: Progress, as_extension: bool = True) -> str:
    """CREATE EXTENSION pgmq from files we write into the server's extension dir; else SQL-only install.

    AS_EXTENSION=False forces pgmq's SQL-only install (what happens when the directory is not writable).
    """
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'").fetchone()
    if row:
        return f"extension {row['extversion']}"
    if conn.execute("SELECT to_regclass('pgmq.meta') IS NOT NULL AS x").fetchone()["x"]:
        return "sql-only (already installed)"
    if not as_extension:
        with conn.transaction():
            conn.execute(pgmq_sql())
        return f"sql-only {PGMQ_VERSION}"
    sharedir = conn.execute("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'").fetchone()["setting"]
    ext = Path(sharedir) / "extension"
    script = ext / f"pgmq--{PGMQ_VERSION}.sql"
    try:
        if not script.exists() or script.read_text() != pgmq_sql():
            script.write_text(pgmq_sql())
        (ext / "pgmq.control").write_text(CONTROL)
    except OSError as e:
        progress(f"  pgmq: cannot write {ext} ({e.strerror}); falling back to pgmq's SQL-only install")
    avail = conn.execute("SELECT 1 FROM pg_available_extension_versions WHERE name = 'pgmq' AND version = %s",
                         (PGMQ_VERSION,)).fetchone()
    if avail:
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS pgmq VERSION {}").format(sql.Literal(PGMQ_VERSION)))
        return f"extension {PGMQ_VERSION}"
    with conn.transaction():
        conn.execute(pgmq_sql())
    return f"sql-only {PGMQ_VERSION}"


# -- per database steps ------------------------------------------------------------------
def _read(path: Path) -> str:
    return path.read_text()


def run_bootstrap(conn: psycopg.Connection, s: Settings, t: Target) -> None:
    """Superuser SQL for T (extensions, grants on extension objects)."""
    for name in ("_common", t.kind):
        f = s.sql_dir / "bootstrap" / f"{name}.sql"
        if f.exists():
            conn.execute(_read(f))


def _yoyo_url(s: Settings, t: Target) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if t.kind == "postgres":
        d = conninfo_to_dict(t.admin(s))
    else:
        d = conninfo_to_dict(role_conninfo(s, t.dbname, t.owner))
    if "," in str(d.get("host", "")):   # yoyo takes one host: the one of a multi-host URL that takes writes now
        with connect(make_conninfo(**d)) as c:
            d = {**d, "host": c.info.host, "port": c.info.port}
    user = quote(d.get("user", ""), safe="")
    pw = quote(d.get("password", ""), safe="")
    host = d.get("host", "")
    auth = f"{user}:{pw}@" if pw else f"{user}@"
    if host.startswith("/"):
        return f"postgresql+psycopg://{auth}/{t.dbname}?host={quote(host, safe='')}&port={d.get('port', '')}"
    return f"postgresql+psycopg://{auth}{host}:{d.get('port', 5432)}/{t.dbname}"


def migration_dirs(s: Settings, t: Target) -> list[str]:
    dirs = [s.sql_dir / "migrations" / "_common", s.sql_dir / "migrations" / t.kind]
    return [str(d) for d in dirs if d.is_dir()]


def yoyo_backend_and_migrations(s: Settings, t: Target):
    from yoyo import get_backend, read_migrations

    backend = get_backend(_yoyo_url(s, t))
    return backend, read_migrations(*migration_dirs(s, t))


def apply_migrations(s: Settings, t: Target) -> tuple[int, int]:
    """yoyo: apply pending migrations of T as its owner; returns (applied now, total)."""
    backend, migrations = yoyo_backend_and_migrations(s, t)
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return len(pending), len(migrations)
    finally:
        backend.connection.close()


def procedure_files(s: Settings, kind: str) -> list[Path]:
    files: list[Path] = []
    for folder in ("_common", kind):
        d = s.sql_dir / "procedures" / folder
        if d.is_dir():
            files += sorted(d.glob("*.sql"))
    return files


def apply_procedures(s: Settings, t: Target) -> int:
    """Re-apply every repeatable file of T in one transaction, as T's owner (always, not only when pending)."""
    conninfo = t.admin(s) if t.kind == "postgres" else role_conninfo(s, t.dbname, t.owner)
    files = procedure_files(s, t.kind)
    with connect(conninfo, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(4242002)")
        for f in files:
            try:
                conn.execute(_read(f))
            except psycopg.Error as e:
                raise RuntimeError(f"{t.dbname}: {f.relative_to(s.root)} failed: {e}") from e
        # SHARED_QUEUE_ENABLED for SQL that talks to the bus (ops.bus_off: the outbox, the inbox, CentralCloud)
        conn.execute("INSERT INTO ops.settings (key, value, comment) VALUES ('shared_queue_enabled', %s, "
                     "'SHARED_QUEUE_ENABLED, written by orchestrator migrate') ON CONFLICT (key) DO UPDATE "
                     "SET value = EXCLUDED.value, updated_at = now() WHERE ops.settings.value <> EXCLUDED.value",
                     (str(s.shared_queue_enabled).lower(),))
        if t.kind == "shared_queue":
            conn.execute("SELECT bus.configure(%s, %s)", (s.retention_days, s.notify_throttle_ms))
            conn.execute("SELECT bus.configure_attempts(%s)", (s.max_attempts,))
        conn.commit()
    return len(files)


def allowed_run_as(t: Target) -> list[str]:
    """The roles T's schedules may run as: its service role (the default) and its owner. In the
    `postgres` database that is the superuser itself: only the superuser can connect there and write
    its ops.cron_jobs (pg_cron's own housekeeping needs it)."""
    return list(dict.fromkeys([t.service_role, t.owner]))


def _read_cron_jobs(s: Settings, t: Target) -> list[dict]:
    """T's ops.cron_jobs, read as T's owner: it is the owner's table (a view or a function it planted
    there runs with the owner's rights, never the superuser's)."""
    conninfo = t.admin(s) if t.kind == "postgres" else role_conninfo(s, t.dbname, t.owner)
    with connect(conninfo) as conn:
        if t.kind == "postgres":
            conn.execute("SET search_path = pg_catalog, pg_temp")
        return conn.execute("SELECT jobname::text AS jobname, schedule::text AS schedule, command::text AS command, "
                            "run_as::text AS run_as FROM ops.cron_jobs ORDER BY 1").fetchall()


def _refusal(admin_pg: psycopg.Connection, t: Target, job: dict, user: str) -> str | None:
    """Why JOB of T may not run as USER (None: it may). USER must be one of T's own roles, exist, and
    not be a superuser (outside the superuser's own `postgres` database)."""
    allowed = allowed_run_as(t)
    role = admin_pg.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (user,)).fetchone()
    reasons = []
    if user not in allowed:
        reasons.append("not a role of this database")
    if role is None:
        reasons.append("no such role")
    elif role["rolsuper"] and t.kind != "postgres":
        reasons.append("a superuser")
    if not reasons:
        return None
    why = ", ".join(reasons)
    return (f"{t.dbname}:{job['jobname']}: run_as {user!r} is refused ({why}); jobs of {t.dbname} run only as "
            f"{' or '.join(allowed)} (run_as NULL = {t.service_role}). Fix, as {t.owner} in {t.dbname}: "
            f"UPDATE ops.cron_jobs SET run_as = NULL WHERE jobname = '{job['jobname']}' (and drop whatever "
            "sets it back), then run `orchestrator migrate` again. The job was not scheduled or changed.")


def sync_schedules(admin_pg: psycopg.Connection, s: Settings, t: Target) -> int:
    """Upsert T's ops.cron_jobs into pg_cron as `<db>:<job>` and unschedule the ones it no longer wants.

    The jobs are read as T's owner and each run_as is checked against allowed_run_as(T): a job that
    names another role is left out (an existing pg_cron job of that name keeps what it had) and
    Refused is raised after the others are in place. Returns how many jobs were scheduled.
    """
    wanted = _read_cron_jobs(s, t)
    names, refused, n = [], [], 0
    for j in wanted:
        name = f"{t.dbname}:{j['jobname']}"
        names.append(name)
        user = j["run_as"] or t.service_role
        why = _refusal(admin_pg, t, j, user)
        if why:
            refused.append(why)
            continue
        row = admin_pg.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (name,)).fetchone()
        if row:
            admin_pg.execute("SELECT cron.alter_job(%s, %s, %s, %s, %s, true)",
                             (row["jobid"], j["schedule"], j["command"], t.dbname, user))
        else:
            admin_pg.execute("SELECT cron.schedule_in_database(%s, %s, %s, %s, %s, true)",
                             (name, j["schedule"], j["command"], t.dbname, user))
        n += 1
    admin_pg.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE starts_with(jobname, %s) AND NOT jobname = ANY(%s)",
                     (f"{t.dbname}:", names))
    if refused:
        raise Refused("\n".join(refused))
    return n


# -- the whole run --------------------------------------------------------------------------
def instance_targets(s: Settings, conn: psycopg.Connection | None = None) -> list[Target]:
    """Extra Singularity instances registered in shared_queue (bus.instances), read as the shared_queue
    owner (its table: whatever it planted there runs with its rights), on CONN when given. An id that
    is not a valid instance id is refused (Refused), never turned into a database name."""
    from orchestrator.infra.config import INSTANCE_RE

    if conn is None:
        try:
            conninfo = owner_conninfo(s, "shared_queue")
        except RuntimeError:  # no password yet: the first migrate has not created the owner role
            return []
        try:
            with connect(conninfo) as c:
                return instance_targets(s, c)
        except psycopg.OperationalError:  # shared_queue (or its owner) not created yet
            return []
    if not conn.execute("SELECT to_regclass('bus.instances') IS NOT NULL AS x").fetchone()["x"]:
        return []
    # a bridge (the NATS bridge: bus.instances.bridge, shared_queue 0011) has reply queues but no database;
    # read through to_jsonb so a shared_queue not yet migrated that far (no column) still answers
    ids = [r["i"] for r in conn.execute("SELECT i.instance_id::text AS i FROM bus.instances i WHERE NOT "
                                        "coalesce((to_jsonb(i)->>'bridge')::boolean, false) ORDER BY 1")]
    bad = [i for i in ids if i != "default" and not INSTANCE_RE.match(i or "")]
    if bad:
        raise Refused(f"instance id {bad[0]!r} in shared_queue's bus.instances is not an instance id (1-16 characters "
                      "a-z and 0-9, starting with a letter): it would name a database. Fix, as own_shared_queue: "
                      "DELETE FROM bus.instances WHERE instance_id = ... (and restore its CHECK constraint), then run "
                      "`orchestrator migrate` again.")
    return [Target(f"singularity_{i}", "singularity") for i in ids if i != "default"]


def all_targets(s: Settings) -> list[Target]:
    """Every database to migrate: the five, the extra instances, and `postgres` on each server."""
    base = [Target("shared_queue", "shared_queue"), Target("singularity", "singularity")]
    dbs = base + instance_targets(s) + [Target(d, d) for d in DATABASES if d not in ("shared_queue", "singularity")]
    firsts = {t.server(s): t.dbname for t in reversed(dbs)}   # a database on each server, the bus's first
    return dbs + [Target("postgres", "postgres", on=("" if first == "shared_queue" else first))
                  for first in sorted(firsts.values(), key=lambda d: d != "shared_queue")]


def server_plan(s: Settings, targets: list[Target]) -> dict:
    """TARGETS grouped by server (a Settings.server key), the bus's server first."""
    plan: dict = {}
    for t in sorted(targets, key=lambda t: t.server(s) != s.server("shared_queue")):
        plan.setdefault(t.server(s), []).append(t)
    return plan


def service_roles_for(t: Target, all_service_roles: list[str]) -> list[str]:
    if t.kind == "shared_queue":
        return all_service_roles
    if t.kind == "postgres":
        return []
    return [t.service_role]


@contextmanager
def _partman_create(s: Settings, t: Target):
    """In shared_queue, CREATE in schema partman for its owner while the procedures run: pgmq.create_partitioned
    (a kind with a partition_interval) has pg_partman put a template table there. Revoked right after, so no
    less trusted role can create next to pg_partman's superuser-owned definers the rest of the time."""
    if t.kind != "shared_queue":
        yield
        return
    with superuser_conn(s, t.dbname, server=t.server(s)) as su:
        su.execute("GRANT CREATE ON SCHEMA partman TO own_shared_queue")
        try:
            yield
        finally:
            su.execute("REVOKE CREATE ON SCHEMA partman FROM own_shared_queue")


def _migrate_database(s: Settings, t: Target, progress: Progress) -> None:
    t1 = time.monotonic()
    with superuser_conn(s, t.dbname, server=t.server(s)) as su:  # search_path pg_catalog, pg_temp: nothing of the owner's
        extra = ""
        if t.kind == "shared_queue":
            extra = f" pgmq {install_pgmq(su, progress)};"
        run_bootstrap(su, s, t)
        if t.kind in LINKED_KINDS:
            ensure_bus_link(su, s, t.dbname, t.service_role, t.owner)
        if t.kind == "postgres":
            ensure_report_link(su, s)
    applied, total = apply_migrations(s, t)
    with _partman_create(s, t):
        nproc = apply_procedures(s, t)
    progress(f"  {t.dbname:<22}{extra} migrations {total - applied}+{applied} new/{total};"
             f" procedures {nproc} files; {time.monotonic() - t1:.1f}s")


def _migrate_server(s: Settings, targets: list[Target], roles: list[str], svc: list[str],
                    progress: Progress) -> tuple[int, list[str], str]:
    """Roles, databases, SQL and schedules of the TARGETS on one server; returns (schedules, refusals, report)."""
    with connect(targets[0].admin(s)) as admin:
        for role in roles:
            ensure_role(admin, s, role)
        for t in targets:
            ensure_database(admin, t, service_roles_for(t, svc))
        for t in targets:
            _migrate_database(s, t, progress)
        njobs, refused = 0, []
        for t in targets:
            try:
                njobs += sync_schedules(admin, s, t)
            except Refused as e:  # the other databases' schedules still go in; migrate fails in the end
                refused.append(str(e))
        reported = ""
        if admin.execute("SELECT to_regprocedure('ops.report_schedules()') IS NOT NULL AS x").fetchone()["x"]:
            try:  # the dashboard's and alerts' view of the schedules, refreshed each minute by pg_cron
                n = admin.execute("SELECT ops.report_schedules() AS n").fetchone()["n"]
                reported = f", {n} reported to shared_queue"
            except psycopg.Error as e:
                reported = (f"; WARNING: reporting them to shared_queue failed ({str(e).strip()}): the dashboard "
                            "and alerts will not see schedules until postgres:report_schedules succeeds")
    return njobs, refused, reported


def migrate(s: Settings, progress: Progress = print, only: list[Target] | None = None) -> None:
    """Create roles and databases, install extensions, apply migrations, procedures and schedules, server by
    server (the bus's first; every server gets every role, with the same password)."""
    t0 = time.monotonic()
    with connect(admin_conninfo(s, "postgres")) as lock:   # the bus's server: one migrator at a time
        lock.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            targets = only or all_targets(s)
            svc = sorted({t.service_role for t in targets if t.kind in SERVICES} | set(SERVICES.values()))
            roles = sorted({t.owner for t in targets if t.kind != "postgres"} | set(svc)
                           | {owner_role(d) for d in DATABASES})
            plan = server_plan(s, targets)
            refused = []
            for key, ts in plan.items():
                njobs, refusals, reported = _migrate_server(s, ts, roles, svc, progress)
                refused += refusals
                where = f" on {key}" if len(plan) > 1 else ""
                progress(f"  pg_cron{where}: {njobs} schedules in place{reported}")
            progress(f"  done in {time.monotonic() - t0:.1f}s")
            if refused:
                raise Refused("schedules refused:\n" + "\n".join(refused))
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


def status(s: Settings) -> list[dict]:
    """Applied and pending migrations per database."""
    out = []
    for t in all_targets(s):
        try:
            backend, migrations = yoyo_backend_and_migrations(s, t)
        except Exception as e:  # database not created yet, or no password yet
            out.append({"database": t.dbname, "applied": [], "pending": [], "error": str(e).splitlines()[0]})
            continue
        try:
            applied = [m.id for m in migrations if backend.is_applied(m)]
            pending = [m.id for m in migrations if not backend.is_applied(m)]
        finally:
            backend.connection.close()
        out.append({"database": t.dbname, "applied": applied, "pending": pending, "error": None})
    return out
