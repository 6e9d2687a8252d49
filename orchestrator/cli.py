"""The `orchestrator` command line. Every option is also read from ORCHESTRATOR_<COMMAND>_<OPTION>."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys

import click

from .config import settings

log = logging.getLogger("orchestrator")


def _fail(msg: str, code: int = 1) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@click.group(context_settings={"auto_envvar_prefix": "ORCHESTRATOR", "help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="Logging level (env ORCHESTRATOR_LOG_LEVEL).")
@click.option("--log-json/--no-log-json", default=False, help="Structured JSON logs (env ORCHESTRATOR_LOG_JSON).")
def main(log_level: str, log_json: bool) -> None:
    """Postgres-centric agent backbone: embedded PostgreSQL, migrations, the bus, and the daemon."""
    from .logs import configure

    configure(log_level, log_json)


# -- db ------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The embedded PostgreSQL cluster (used when no DB_HOST / *_DB_URL is set)."""


def _cluster():
    from .cluster import Cluster

    s = settings()
    if s.external:
        _fail("a database server is configured by env (DB_HOST / SHARED_QUEUE_DB_URL); "
              "`orchestrator db` manages only the embedded cluster. Use `orchestrator doctor` instead.")
    return Cluster(s)


@db.command("start")
def db_start() -> None:
    """initdb if needed and start the cluster (idempotent)."""
    from .cluster import ClusterError

    c = _cluster()
    try:
        c.start()
    except ClusterError as e:
        _fail(str(e))
    st = c.status()
    click.echo(f"PostgreSQL running on port {st['port']} (socket {st['socket_dir']}, data {st['data_dir']})")


@db.command("stop")
@click.option("--mode", type=click.Choice(["smart", "fast", "immediate"]), default="fast", show_default=True)
def db_stop(mode: str) -> None:
    """Stop the cluster."""
    _cluster().stop(mode)
    click.echo("PostgreSQL stopped")


@db.command("destroy")
@click.confirmation_option(prompt="Delete the embedded cluster and all its data?")
def db_destroy() -> None:
    """Stop the cluster and delete its data directory."""
    _cluster().destroy()
    click.echo("embedded cluster removed")


@db.command("status")
def db_status() -> None:
    """Where the cluster lives and whether it runs."""
    for k, v in _cluster().status().items():
        click.echo(f"{k:<11} {v}")


@db.command("env")
def db_env() -> None:
    """Print `export PG...` lines: eval "$(orchestrator db env)" then psql shared_queue works."""
    c = _cluster()
    click.echo("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in c.env().items()))


@db.command("url")
@click.argument("database")
@click.option("--role", default=None, help="Connect as this role (default: the cluster superuser on the socket).")
def db_url(database: str, role: str | None) -> None:
    """Print a libpq URL for DATABASE."""
    from urllib.parse import quote

    from .secrets import role_password

    s = settings()
    c = _cluster()
    if role is None:
        click.echo(f"postgresql://postgres@/{database}?host={quote(str(c.socket_dir), safe='')}&port={c.port}")
        return
    pw = role_password(s, role)
    if pw is None:
        _fail(f"no password known for role {role}; run `orchestrator migrate` first")
    click.echo(f"postgresql://{role}:{quote(pw, safe='')}@127.0.0.1:{c.port}/{database}")


@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def db_psql(args: tuple[str, ...]) -> None:
    """Run psql against the cluster as its superuser (extra ARGS go to psql)."""
    env = {**os.environ, **_cluster().env()}
    os.execvpe("psql", ["psql", *args], env)


# -- migrate --------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create roles, databases and extensions; apply migrations, procedures and schedules."""
    if ctx.invoked_subcommand is None:
        from .migrate import migrate as run

        click.echo("migrating:")
        try:
            run(settings(), progress=click.echo)
        except Exception as e:  # noqa: BLE001 - report any failure clearly
            _fail(f"migrate failed: {e}")


@migrate.command("status")
def migrate_status() -> None:
    """Applied and pending migrations per database."""
    from .migrate import status

    for row in status(settings()):
        if row["error"]:
            click.echo(f"{row['database']:<22} not migrated yet ({row['error']})")
            continue
        click.echo(f"{row['database']:<22} applied {len(row['applied'])}, pending {len(row['pending'])}")
        for m in row["applied"]:
            click.echo(f"    [x] {m}")
        for m in row["pending"]:
            click.echo(f"    [ ] {m}")


def run() -> None:  # pragma: no cover
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
