"""`orchestrator autonomous ...` (seed 003's AutonomousWorker) and `orchestrator instance ...`."""

from __future__ import annotations

import json
import sys

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import json_option, table


def _call(fn, *args, **kw):
    """FN(settings, ...): a UserError or database error reaches the CLI's one error path (cli.main.Cli)."""
    return fn(settings(), *args, **kw)


instance_opt = click.option("--instance", default="default", show_default=True,
                            help="Singularity instance (database singularity_<id>; default = singularity).")


@click.group()
def autonomous() -> None:
    """Run Singularity's scheduled jobs now and see their state (each command is one SQL call)."""


def _job_command(cmd: str, job: str) -> None:
    @autonomous.command(cmd, help=f"Run the `{job}` job now (core.run_job('{job}')).")
    @instance_opt
    def _cmd(instance: str) -> None:
        from orchestrator.singularity.autonomous import run_job

        r = _call(run_job, job, instance=instance)
        click.echo(r)
        if r.startswith("failed"):
            sys.exit(1)


def _register() -> None:
    from orchestrator.singularity.autonomous import JOBS

    for cmd, job in JOBS.items():
        _job_command(cmd, job)


_register()


@autonomous.command("queue-status")
@instance_opt
@json_option
def queue_status(instance: str) -> None:
    """Outbox depth and last error, last drain, tasks by status, learning backlog."""
    from orchestrator.singularity.autonomous import queue_status as qs

    table(_call(qs, instance=instance), ["item", "value"])


@autonomous.command("jobs-status")
@instance_opt
@click.option("--cron", is_flag=True, help="Also pg_cron's own last run (cron.job_run_details; needs the superuser).")
@json_option
def jobs_status(instance: str, cron: bool) -> None:
    """Each schedule with its last run, status and duration (core.job_runs)."""
    from orchestrator.singularity.autonomous import jobs_status as js

    cols = ["job", "schedule", "last_start", "last_status", "last_ms", "runs_24h", "failed_24h", "last_detail"]
    if cron:
        cols = cols[:-1] + ["cron_start", "cron_status", "cron_ms", "cron_message"]
    table(_call(js, instance=instance, cron=cron), cols)


@autonomous.command("cdc")
@instance_opt
@click.option("--patterns", "what", flag_value="patterns", help="Only core.learned_patterns changes.")
@click.option("--sessions", "what", flag_value="sessions", help="Only core.agent_sessions changes.")
@click.option("--consume", is_flag=True, help="Advance the slot (default: peek, changes stay).")
@click.option("--limit", default=100, show_default=True, help="At most this many changes.")
def cdc_cmd(instance: str, what: str | None, consume: bool, limit: int) -> None:
    """Row changes from the instance's wal2json CDC slot, one JSON line each."""
    from orchestrator.singularity.autonomous import cdc

    for r in _call(cdc, instance=instance, what=what or "all", consume=consume, limit=limit):
        click.echo(json.dumps({"lsn": str(r["lsn"]), **r["change"]}, default=str))
