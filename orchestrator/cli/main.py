"""The `orchestrator` command line. Every option is also read from ORCHESTRATOR_<COMMAND>_<OPTION>."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys

import click

from orchestrator.infra.config import settings
from orchestrator.infra.links import refresh_schedule_report
from orchestrator.infra.logs import logging_json
from orchestrator.infra.output import fail, fmt, json_line, json_mode, json_option, table

log = logging.getLogger("orchestrator")


class Cli(click.Group):
    """The command group whose invoke is the CLI's one error path: a failed connection, a refused value, a
    setting or a file that cannot be used ends the command with what was wrong and the fix (exit 1), never a
    traceback. Anything else is a bug: one line says so, and --log-level debug shows the traceback."""

    def invoke(self, ctx: click.Context):
        from orchestrator.infra.output import explain

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - the one place that turns errors into messages
            text = explain(e, _external())
            if text is None:
                if log.isEnabledFor(logging.DEBUG):
                    raise
                text = (f"unexpected {type(e).__name__}: {str(e).strip()[:300] or '(no message)'}. This is a bug: "
                        "run the command again with --log-level debug for the traceback, and report it")
            fail(text)


def _external() -> bool | None:
    """Whether a server is configured by env (None when the settings themselves are bad)."""
    try:
        return settings().external
    except SystemExit:
        return None


def _log_level(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from orchestrator.infra.config import LOG_LEVELS

    if value.lower() not in LOG_LEVELS:
        source = ctx.get_parameter_source(param.name)
        name = "ORCHESTRATOR_LOG_LEVEL" if source == click.core.ParameterSource.ENVIRONMENT else "--log-level"
        fail(f"{name}={value!r} is not a log level; use one of {', '.join(LOG_LEVELS)} (default info)")
    return value.upper()


@click.group(cls=Cli, context_settings={"auto_envvar_prefix": "ORCHESTRATOR", "help_option_names": ["-h", "--help"]})
@click.version_option(None, "--version", "-V", package_name="orchestrator", prog_name="orchestrator",
                      message="%(prog)s %(version)s")
@click.option("--log-level", default="INFO", show_default=True, callback=_log_level,
              help="Logging level: debug, info, warning, error, critical (env ORCHESTRATOR_LOG_LEVEL).")
@click.option("--log-json/--no-log-json", default=False, help="Structured JSON logs (env ORCHESTRATOR_LOG_JSON).")
def main(log_level: str, log_json: bool) -> None:
    """Postgres-centric agent backbone: embedded PostgreSQL, migrations, the bus, and the daemon."""
    from orchestrator.infra.logs import configure

    configure(log_level, log_json)


# -- db ------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The embedded PostgreSQL cluster (used when no DB_HOST / *_DB_URL is set)."""


def _cluster():
    from orchestrator.infra.cluster import Cluster

    s = settings()
    if s.external:
        fail("a database server is configured by env (DB_HOST / SHARED_QUEUE_DB_URL); "
              "`orchestrator db` manages only the embedded cluster. Use `orchestrator doctor` instead.")
    return Cluster(s)


@db.command("start")
@click.option("--ha", is_flag=True, help="A local HA pair instead: pg_auto_failover monitor + primary + synchronous "
              "secondary (.state/ha); prints the variables that put the databases on it.")
def db_start(ha: bool) -> None:
    """initdb if needed and start the cluster (idempotent)."""
    from orchestrator.infra.cluster import ClusterError

    if ha:
        _ha_start()
        return
    c = _cluster()
    try:
        c.start()
    except ClusterError as e:
        fail(str(e))
    st = c.status()
    click.echo(f"PostgreSQL running on port {st['port']} (socket {st['socket_dir']}, data {st['data_dir']})")


def _ha_start() -> None:
    from orchestrator.infra.cluster import ClusterError
    from orchestrator.infra.config import DATABASES
    from orchestrator.infra.ha import HaCluster

    h = HaCluster(settings())
    try:
        h.start()
    except ClusterError as e:
        fail(str(e))
    for node, (reported, _a) in h.states().items():
        click.echo(f"# {node}: {reported} on 127.0.0.1:{h.ports()[node]}")
    click.echo(f"# monitor on 127.0.0.1:{h.ports()['monitor']} (pg_autoctl show state --pgdata {h.pgdata('monitor')})")
    click.echo("# every database on the HA pair: eval these, then `orchestrator migrate` and `orchestrator daemon`")
    for k, v in h.env(DATABASES).items():
        click.echo(f"export {k}={shlex.quote(v)}")


@db.command("stop")
@click.option("--mode", type=click.Choice(["smart", "fast", "immediate"]), default="fast", show_default=True)
@click.option("--ha", is_flag=True, help="Stop the local HA pair (`db start --ha`) instead.")
def db_stop(mode: str, ha: bool) -> None:
    """Stop the cluster."""
    if ha:
        from orchestrator.infra.ha import HaCluster

        HaCluster(settings()).stop()
        click.echo("HA pair stopped")
        return
    _cluster().stop(mode)
    click.echo("PostgreSQL stopped")


@db.command("destroy")
@click.option("--ha", is_flag=True, help="Delete the local HA pair (`db start --ha`) instead.")
@click.confirmation_option(prompt="Delete the cluster and all its data?")
def db_destroy(ha: bool) -> None:
    """Stop the cluster and delete its data directory."""
    if ha:
        from orchestrator.infra.ha import HaCluster

        HaCluster(settings()).destroy()
        click.echo("HA pair removed")
        return
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

    from orchestrator.infra.secrets import role_password

    s = settings()
    c = _cluster()
    if role is None:
        click.echo(f"postgresql://postgres@/{database}?host={quote(str(c.socket_dir), safe='')}&port={c.port}")
        return
    pw = role_password(s, role)
    if pw is None:
        fail(f"no password known for role {role}; run `orchestrator migrate` first")
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
        from orchestrator.infra.migrate import migrate as run

        click.echo("migrating:")
        try:
            run(settings(), progress=click.echo)
        except Exception as e:  # noqa: BLE001 - report any failure clearly
            from orchestrator.infra.output import explain

            fail(f"migrate failed: {explain(e, _external()) or e}")


@migrate.command("status")
def migrate_status() -> None:
    """Applied and pending migrations per database."""
    from orchestrator.infra.db import admin_conninfo
    from orchestrator.infra.migrate import status

    reachable(admin_conninfo(settings(), "postgres"))  # a server that is down: said once, with the fix
    for row in status(settings()):
        if row["error"]:
            click.echo(f"{row['database']:<22} not migrated yet ({row['error']})")
            continue
        click.echo(f"{row['database']:<22} applied {len(row['applied'])}, pending {len(row['pending'])}")
        for m in row["applied"]:
            click.echo(f"    [x] {m}")
        for m in row["pending"]:
            click.echo(f"    [ ] {m}")


# -- the bus --------------------------------------------------------------------------
def reachable(conninfo: str) -> None:
    """Connect once and close: a server that is down or refuses ends the command here, with the fix (Cli)."""
    from orchestrator.infra.db import connect

    connect(conninfo, connect_timeout=10).close()


def _operator():
    """The shared_queue owner's connection: operator views and DLQ tools."""
    from orchestrator.infra.db import connect, owner_conninfo

    return connect(owner_conninfo(settings(), "shared_queue"))


@main.command()
@json_option
def queues() -> None:
    """A table of every queue: length, visible, oldest age, total, dead letters."""
    with _operator() as conn:
        rows = conn.execute("SELECT * FROM bus.queue_overview()").fetchall()
    table(rows, ["queue_name", "instance_id", "queue_length", "visible", "oldest_age_s", "total_messages",
                  "dead_letters"])


@main.command()
@click.argument("queue")
@click.argument("message")
@click.option("--role", default=None, help="Send as this service role (default: the shared_queue owner).")
def send(queue: str, message: str, role: str | None) -> None:
    """Send MESSAGE (a JSON object, or - to read it from stdin) to QUEUE; it is validated like any other."""
    from orchestrator.core.bus import Bus, BusError
    from orchestrator.core.messages import ValidationError
    from orchestrator.infra.db import owner_conninfo, role_conninfo

    if message == "-":
        message = sys.stdin.read()
    try:
        body = json.loads(message)
    except json.JSONDecodeError as e:
        fail(f"MESSAGE is not valid JSON ({e.msg} at position {e.pos}); pass one JSON object, e.g. '{{\"k\": \"v\"}}'")
    except RecursionError:
        fail("MESSAGE is nested too deeply to decode; flatten it, or send deeply nested data as a JSON string")
    s = settings()
    conninfo = role_conninfo(s, "shared_queue", role) if role else owner_conninfo(s, "shared_queue")
    reachable(conninfo)  # at once, instead of the pool's retries
    with Bus(conninfo, pool_size=1, source=role or "operator", enabled=s.shared_queue_enabled) as bus:
        try:
            msg_id = bus.publish(queue, body)
        except (ValidationError, PermissionError, BusError) as e:
            fail(str(e))
    click.echo(f"sent msg_id {msg_id} to {queue}")


@main.command()
@click.argument("queue")
@click.option("--archive", is_flag=True, help="Show the queue's archive instead of live messages.")
@click.option("--limit", default=20, show_default=True)
@json_option
def read(queue: str, archive: bool, limit: int) -> None:
    """Show messages of QUEUE (or its archive) without consuming them."""
    with _operator() as conn:
        rows = conn.execute("SELECT * FROM bus.peek(%s, %s, %s)", (queue, archive, limit)).fetchall()
    if json_mode():
        table(rows, ["msg_id", "read_ct", "enqueued_at", "archived_at" if archive else "vt", "message", "headers"])
        return
    for r in rows:
        when = f" archived {fmt(r['archived_at'])}" if archive else f" vt {fmt(r['vt'])}"
        click.echo(f"#{r['msg_id']} read_ct={r['read_ct']} enqueued {fmt(r['enqueued_at'])}{when}")
        click.echo("  " + json_line(r["message"]))
        if r["headers"]:
            click.echo("  headers " + json_line(r["headers"]))
    if not rows:
        click.echo("(empty)")


@main.group()
def dlq() -> None:
    """The dead-letter queue: list, replay, purge."""


@dlq.command("list")
@click.option("--queue", default=None, help="Only dead letters from this queue.")
@click.option("--limit", default=50, show_default=True)
@json_option
def dlq_list(queue: str | None, limit: int) -> None:
    """Dead letters with their original queue, error and attempts."""
    with _operator() as conn:
        rows = conn.execute("SELECT * FROM bus.peek('dead_letters', false, %s)", (limit,)).fetchall()
    rows = [{"dlq_id": r["msg_id"], "queue": r["message"].get("queue"), "attempts": r["message"].get("attempts"),
             "failed_at": r["message"].get("failed_at"), "error": (r["message"].get("error") or "")[:70]}
            for r in rows if queue is None or r["message"].get("queue") == queue]
    table(rows, ["dlq_id", "queue", "attempts", "failed_at", "error"])


@dlq.command("replay")
@click.argument("dlq_ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
def dlq_replay(dlq_ids: tuple[int, ...], all_: bool) -> None:
    """Send dead letters back to their original queues (validated again)."""
    import psycopg

    with _operator() as conn:
        ids = list(dlq_ids)
        if all_:
            ids = [r["msg_id"] for r in conn.execute("SELECT msg_id FROM pgmq.q_dead_letters ORDER BY msg_id")]
        if not ids:
            fail("name the dead letters to replay (orchestrator dlq list shows their ids) or pass --all")
        refused = 0
        for i in ids:
            try:
                new = conn.execute("SELECT bus.dlq_replay(%s) AS id", (i,)).fetchone()["id"]
                click.echo(f"dead letter {i} replayed as msg_id {new}")
            except psycopg.Error as e:
                refused += 1
                click.echo(f"dead letter {i} not replayed: {e.diag.message_primary} ({e.diag.message_hint or ''})")
    if refused:
        fail(f"{refused} of {len(ids)} dead letters were not replayed (reasons above)")


@dlq.command("purge")
@click.option("--queue", default=None, help="Only dead letters from this queue.")
@click.confirmation_option(prompt="Move these dead letters to the DLQ archive?")
def dlq_purge(queue: str | None) -> None:
    """Move dead letters to the DLQ archive (kept until retention)."""
    with _operator() as conn:
        n = conn.execute("SELECT bus.dlq_purge(%s) AS n", (queue,)).fetchone()["n"]
    click.echo(f"{n} dead letters archived")


@main.command()
def status() -> None:
    """Is everything up: database, migrations, queues, dead letters, schedules, heartbeats."""
    from orchestrator.infra.migrate import status as mstatus

    s = settings()
    if not s.external:
        from orchestrator.infra.cluster import Cluster

        c = Cluster(s)
        click.echo(f"postgres   {'running' if c.running() else 'STOPPED (make db)'} ({c.status()['data_dir']})")
    with _operator() as conn:  # first: with the server down, this says so with the fix
        conn.execute("SELECT 1")
    rows = mstatus(s)
    pending, unknown = sum(len(r["pending"]) for r in rows), [r for r in rows if r["error"]]
    if unknown:
        click.echo(f"migrations unknown for {', '.join(r['database'] for r in unknown)} ({unknown[0]['error']}); "
                   "run `orchestrator migrate`")
    else:
        click.echo(f"migrations {'up to date' if pending == 0 else f'{pending} pending (orchestrator migrate)'}")
    with _operator() as conn:
        q = conn.execute("SELECT sum(queue_length) AS depth, sum(dead_letters) AS dl, max(oldest_age_s) AS oldest "
                         "FROM bus.queue_overview()").fetchone()
        hb = conn.execute("SELECT * FROM bus.heartbeat_status()").fetchall()
    click.echo(f"queues     {q['depth'] or 0} waiting, oldest {q['oldest'] or 0}s; dead letters {q['dl'] or 0}")
    for r in hb:
        click.echo(f"heartbeat  {r['service']}:{r['instance_id']} {r['status']}, last seen {fmt(r['last_seen'])} "
                   f"({r['age_s']} s ago)")
    refresh_schedule_report(settings())
    with _operator() as conn:
        jobs = conn.execute("SELECT * FROM bus.dashboard_schedules()").fetchall()
    for j in jobs:
        click.echo(f"schedule   {j['jobname']:<40} {j['schedule']:<14} last: {j['last_status'] or 'never run'} "
                   f"{fmt(j['last_start']) if j['last_start'] else ''}"
                   + (f" ({(j['last_message'] or '')[:120]})" if j["last_status"] == "failed" else ""))


@main.command()
def alerts() -> None:
    """What needs attention now (deep or stale queues, dead letters, late heartbeats, failing schedules)."""
    with _operator() as conn:  # first: with the server down, this says so (and nothing else is tried)
        refresh_schedule_report(settings())  # the schedules' last runs, fresh
        rows = conn.execute("SELECT * FROM bus.alerts()").fetchall()
    for r in rows:
        click.echo(f"[{r['severity'].upper()}] {r['subject']}: {r['message']}\n    fix: {r['fix']}")
    click.echo(f"{len(rows)} alert(s)")
    sys.exit(1 if rows else 0)


@main.command()
def doctor() -> None:
    """Check the configured server (embedded or DB_HOST / *_DB_URL) and print each missing piece with its fix."""
    from orchestrator.infra.doctor import run

    checks = run(settings())
    bad = 0
    for c in checks:
        mark = "ok " if c.ok else "MISSING"
        click.echo(f"[{mark:^7}] {c.name}: {c.detail}" + ("" if c.ok else f"\n          fix: {c.fix}"))
        bad += 0 if c.ok else 1
    click.echo(f"{len(checks) - bad} ok, {bad} to fix")
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--only", default="", help="Comma-separated workers to run (default: all). Known: see --list.")
@click.option("--list", "list_", is_flag=True, help="List the worker kinds and exit.")
@click.option("--grace", default=20.0, show_default=True, help="Seconds to finish in-flight work on SIGTERM.")
def daemon(only: str, list_: bool, grace: float) -> None:
    """Run the workers under one supervisor until SIGTERM/SIGINT."""
    from orchestrator.cli.workers import factories
    from orchestrator.core.supervisor import Supervisor

    registry = factories()
    if list_:
        for name in registry:
            click.echo(name)
        return
    names = [n.strip() for n in only.split(",") if n.strip()] or list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        fail(f"unknown worker(s) {', '.join(unknown)}; known: {', '.join(registry)}")
    s = settings()
    if not s.shared_queue_enabled:  # every worker reads or writes the bus
        click.echo(f"SHARED_QUEUE_ENABLED=false: the shared queue is turned off, so the bus workers "
                   f"({', '.join(names)}) do not start. The databases keep working on their own: Singularity's "
                   "pg_cron jobs learn and assign, and its outbox keeps every message (its drain records that it "
                   "waits). Set SHARED_QUEUE_ENABLED=true and run `orchestrator migrate` to start them.", err=True)
        return
    _say_if_unreachable(s)
    try:
        made = {n: registry[n](s) for n in names}
    except ValueError as e:  # a worker's setting from the environment is out of range
        fail(str(e))
    for n in [n for n, w in made.items() if w is None]:
        click.echo(f"{n}: not configured, not started (NATS_URL is unset)" if n == "nats"
                   else f"{n}: not configured, not started", err=True)
    workers = [w for w in made.values() if w is not None]
    names = [n for n, w in made.items() if w is not None]
    if not workers:
        fail("no worker to run: " + ", ".join(made) + " not configured (for nats: set NATS_URL)")
    banner = _banner(names, workers)
    if logging_json():  # every line JSON when asked: the banner too
        log.info(banner, extra={"fields": {"event": "banner", "workers": names,
                                          "notices": [w.notice for w in workers if w.notice]}})
    else:
        click.echo(banner, err=True)
    sys.exit(Supervisor(workers, grace_s=grace).run_forever())


@main.command()
@click.option("--instance", envvar=["ORCHESTRATOR_DEMO_INSTANCE", "ORCHESTRATOR_INSTANCE_ID"], default="default",
              show_default=True, help="Singularity instance the demo agent belongs to (orchestrator instance list).")
@click.option("--interactive", is_flag=True, help="Wait for a person to approve and answer on the web page.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each reply.")
@click.pass_context
def demo(ctx: click.Context, instance: str, interactive: bool, timeout: float) -> None:
    """Drive the whole flow (task, LLM, code, approval, question, learning, knowledge) and time each step."""
    from orchestrator.cli import demo as demo_mod

    if log.getEffectiveLevel() >= logging.INFO:  # keep the step display readable; --log-level DEBUG shows all
        for name in ("orchestrator", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    s = settings()
    click.echo(f"orchestrator demo: instance {instance!r} (the workers it needs run in this process; a running "
               "daemon shares the work)")
    try:
        demo_mod.run(s, instance=instance, interactive=interactive, timeout=timeout)
    except demo_mod.DemoError as e:
        fail(f"demo stopped: {e}. Check `orchestrator status` and the daemon's log, then run the demo again.")
    click.echo("\n== orchestrator queues")
    ctx.invoke(queues)
    stats_cmd = main.get_command(ctx, "stats")
    if stats_cmd is not None:
        click.echo("\n== orchestrator stats --days 1")
        ctx.invoke(stats_cmd, days=1, plot_file=None, refresh=True)


def _say_if_unreachable(s) -> None:
    """At the daemon's start: a bus it cannot reach is said once, with the fix (the workers wait for it)."""
    import psycopg

    from orchestrator.infra.db import owner_conninfo
    from orchestrator.infra.output import connection_problem

    try:
        reachable(owner_conninfo(s, "shared_queue"))
    except psycopg.OperationalError as e:
        log.error("%s; the workers keep trying and start work as soon as it answers", connection_problem(e, s.external))
    except Exception:  # noqa: BLE001 - e.g. no password yet: the workers say it themselves
        pass


def _banner(names: list[str], workers: list) -> str:
    """Where to look once the daemon runs (printed to stderr at start): only what is really served."""
    lines = [f"orchestrator daemon: running {', '.join(names)} (Ctrl-C or SIGTERM stops it; in-flight work is "
             "finished or released)"]
    lines += [f"  {w.notice}" for w in workers if w.notice]
    lines += ["  in another terminal:  .venv/bin/orchestrator demo        (the whole flow, step by step)",
              "                        .venv/bin/orchestrator status | queues | stats",
              '                        eval "$(.venv/bin/orchestrator db env)"; psql shared_queue']
    return "\n".join(lines)


from orchestrator.nexus.cli import nexus as _nexus; main.add_command(_nexus)  # noqa: E402, E702, I001
from orchestrator.singularity.cli import autonomous as _autonomous; main.add_command(_autonomous)  # noqa: E402, E702, I001
from orchestrator.cli.instances import instance as _instance; main.add_command(_instance)  # noqa: E402, E702, I001
from orchestrator.genesis.cli import genesis as _genesis; main.add_command(_genesis)  # noqa: E402, E702, I001
from orchestrator.centralcloud.cli import centralcloud as _centralcloud; main.add_command(_centralcloud)  # noqa: E402, E702, I001
from orchestrator.centralcloud.cli import stats as _stats; main.add_command(_stats)  # noqa: E402, E702, I001


def run() -> None:  # pragma: no cover
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
from orchestrator.cli.archive import archive as _archive; main.add_command(_archive)  # noqa: E402, E702, I001
from orchestrator.nats.cli import nats as _nats; main.add_command(_nats)  # noqa: E402, E702, I001
