"""`orchestrator autonomous ...` (seed 003's AutonomousWorker) and `orchestrator instance ...`."""

from __future__ import annotations

import json
import sys

import click

from orchestrator.infra.config import settings


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(1)


def _call(fn, *args, **kw):
    import psycopg

    from orchestrator.singularity.instances import InstanceError

    try:
        return fn(settings(), *args, **kw)
    except InstanceError as e:
        _fail(str(e))
    except psycopg.Error as e:
        diag = getattr(e, "diag", None)
        text = (diag.message_primary if diag and diag.message_primary else str(e)).strip()
        _fail(f"{text} ({diag.message_hint})" if diag and diag.message_hint else text)


def _table(rows: list[dict], cols: list[str]) -> None:
    from orchestrator.cli.main import _table as table

    table(rows, cols)


instance_opt = click.option("--instance", default="default", show_default=True,
                            help="Singularity instance (database singularity_<id>; default = singularity).")


@click.group()
def autonomous() -> None:
    """Run Singularity's scheduled jobs now and see their state (each command is one SQL call)."""


def _job_command(cmd: str, job: str) -> None:
    @autonomous.command(cmd, help=f"Run the `{job}` job now (core.run_job('{job}')).")
    @instance_opt
    def _cmd(instance: str) -> None:
        from orchestrator.singularity.instances import run_job

        r = _call(run_job, job, instance=instance)
        click.echo(r)
        if r.startswith("failed"):
            sys.exit(1)


def _register() -> None:
    from orchestrator.singularity.instances import JOBS

    for cmd, job in JOBS.items():
        _job_command(cmd, job)


_register()


@autonomous.command("queue-status")
@instance_opt
def queue_status(instance: str) -> None:
    """Outbox depth and last error, last drain, tasks by status, learning backlog."""
    from orchestrator.singularity.instances import queue_status as qs

    _table(_call(qs, instance=instance), ["item", "value"])


@autonomous.command("jobs-status")
@instance_opt
@click.option("--cron", is_flag=True, help="Also pg_cron's own last run (cron.job_run_details; needs the superuser).")
def jobs_status(instance: str, cron: bool) -> None:
    """Each schedule with its last run, status and duration (core.job_runs)."""
    from orchestrator.singularity.instances import jobs_status as js

    cols = ["job", "schedule", "last_start", "last_status", "last_ms", "runs_24h", "failed_24h", "last_detail"]
    if cron:
        cols = cols[:-1] + ["cron_start", "cron_status", "cron_ms", "cron_message"]
    _table(_call(js, instance=instance, cron=cron), cols)


@autonomous.command("cdc")
@instance_opt
@click.option("--patterns", "what", flag_value="patterns", help="Only core.learned_patterns changes.")
@click.option("--sessions", "what", flag_value="sessions", help="Only core.agent_sessions changes.")
@click.option("--consume", is_flag=True, help="Advance the slot (default: peek, changes stay).")
@click.option("--limit", default=100, show_default=True, help="At most this many changes.")
def cdc_cmd(instance: str, what: str | None, consume: bool, limit: int) -> None:
    """Row changes from the instance's wal2json CDC slot, one JSON line each."""
    from orchestrator.singularity.instances import cdc

    for r in _call(cdc, instance=instance, what=what or "all", consume=consume, limit=limit):
        click.echo(json.dumps({"lsn": str(r["lsn"]), **r["change"]}, default=str))


@click.group()
def instance() -> None:
    """Singularity instances: each its own database, role, schedules, outbox and reply queues."""


@instance.command("add")
@click.argument("instance_id")
def instance_add(instance_id: str) -> None:
    """Create instance INSTANCE_ID (database singularity_<id>); safe to run again."""
    from orchestrator.singularity.instances import add_instance

    db = _call(add_instance, instance_id, progress=click.echo)
    click.echo(f"instance {instance_id}: database {db}, role svc_singularity_{instance_id}")


@instance.command("list")
def instance_list() -> None:
    """Registered instances."""
    from orchestrator.singularity.instances import list_instances

    _table(_call(list_instances), ["instance_id", "database", "role", "exists", "queues", "outbox", "created_at"])


@instance.command("remove")
@click.argument("instance_id")
@click.option("--yes", is_flag=True, help="Really drop the database and everything in it.")
def instance_remove(instance_id: str, yes: bool) -> None:
    """Drop instance INSTANCE_ID: schedules, CDC slot, database, queues, role."""
    from orchestrator.singularity.instances import remove_instance

    if not yes:
        _fail(f"this drops database singularity_{instance_id} and its queues; add --yes to do it")
    _call(remove_instance, instance_id)
    click.echo(f"instance {instance_id} removed")


@instance.command("rotate-key")
@instance_opt
@click.option("--no-reencrypt", is_flag=True, help="Keep old sessions under their old key.")
def instance_rotate_key(instance: str, no_reencrypt: bool) -> None:
    """Add a new session-encryption key (new key id) and re-encrypt sessions with it."""
    from orchestrator.singularity.instances import rotate_key

    r = _call(rotate_key, instance, reencrypt=not no_reencrypt)
    click.echo(f"instance {instance}: new key id {r['key_id']}; {r['reencrypted']} sessions re-encrypted")
