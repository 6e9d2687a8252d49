"""`orchestrator genesis ...`: is the sandbox usable, run code through it, recent executions, limits."""

from __future__ import annotations

import json
import sys

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import fail, json_option, sql_rows, table


def _owner():
    from orchestrator.infra.db import connect, owner_conninfo

    return connect(owner_conninfo(settings(), "genesis"))


def _run(sql: str, params: tuple = ()) -> list[dict]:
    return sql_rows(_owner, sql, params)


@click.group()
def genesis() -> None:
    """Genesis: sandboxed code execution (check, run, list, limits)."""


@genesis.command()
@click.option("--json", "as_json", is_flag=True, help="Print what is in force as JSON.")
def check(as_json: bool) -> None:
    """Is the sandbox usable here, and what confines a job? Runs a probe through it."""
    from orchestrator.genesis.sandbox import (
        PACKAGES,
        Sandbox,
        SandboxUnavailable,
        confinement_report,
        installed,
    )

    try:
        sb = Sandbox()
        r = sb.check()
    except SandboxUnavailable as e:
        fail(str(e))
    langs = installed()
    if as_json:
        click.echo(json.dumps({"sandbox": sb.kind, "confinement": sb.confinement(), "probe": r["probe"],
                               "duration_ms": r["duration_ms"], "languages": langs}, indent=2))
        return
    uid = "a dedicated uid per job (GENESIS_UID_BASE + slot)" if sb.root else "the current (non-root) user"
    click.echo(f"sandbox {sb.kind}: ok ({r['duration_ms']:.0f} ms for the python probe; runs as {uid})")
    lines, warnings = confinement_report(sb, r["probe"])
    for line in lines:
        click.echo(line)
    missing = [f"{lang} (apt-get install {pkg})" for lang, pkg in PACKAGES.items() if lang not in langs]
    click.echo(f"languages: {', '.join(langs)}" + (f"; missing: {', '.join(missing)}" if missing else ""))
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


@genesis.command("run")
@click.argument("file", type=click.File("r"), default="-")
@click.option("--language", "-l", default="python", show_default=True, help="python, javascript (node), bash, elixir (elixir main.exs) or rust (rustc, then the binary; "
              "the compile counts against the limits).")
@click.option("--mode", "-m", default="run", show_default=True, type=click.Choice(["run", "validate", "lint"]))
@click.option("--timeout", "timeout_s", type=float, default=None, help="Wall-clock seconds (capped by the maximum).")
@click.option("--limit", "limits", multiple=True, help="NAME=VALUE, e.g. memory_mb=128 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def run_(file, language, mode, timeout_s, limits, as_json) -> None:
    """Run FILE (or stdin) through the sandbox locally, with the built-in default limits and maxima."""
    from orchestrator.genesis.sandbox import Sandbox, SandboxUnavailable, resolve_local

    req: dict = {}
    for item in limits:
        name, _, value = item.partition("=")
        try:
            req[name] = float(value)
        except ValueError:
            fail(f"--limit {item!r}: expected NAME=NUMBER, e.g. memory_mb=128")
    if timeout_s is not None:
        req["timeout_s"] = timeout_s
    try:
        lim = resolve_local(req)
        r = Sandbox().run(file.read(), language, mode, lim)
    except (SandboxUnavailable, ValueError) as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        sys.stdout.write(r["stdout"])
        sys.stderr.write(r["stderr"])
        if r["error"]:
            click.echo(f"[genesis] {r['error']}", err=True)
        click.echo(f"[genesis] exit={r['exit_code']} killed={r['killed_reason']} {r['duration_ms']:.0f} ms "
                   f"peak {r['peak_memory_kb']} KB", err=True)
    sys.exit(0 if r["exit_code"] == 0 else 1)


@genesis.command("list")
@click.option("--limit", default=20, show_default=True)
@json_option
def list_(limit: int) -> None:
    """Recent executions, newest first."""

    table(_run("SELECT * FROM genesis.recent_executions LIMIT %s", (limit,)),
           ["request_id", "agent_id", "language", "mode", "status", "runs", "exit_code", "killed_reason",
            "exceeded", "duration_ms", "peak_memory_kb", "error"])


@genesis.group(invoke_without_command=True)
@click.pass_context
@json_option
def limits(ctx: click.Context) -> None:
    """Resource limits: defaults and operator maxima (subcommand: set)."""
    if ctx.invoked_subcommand is None:

        table(_run("SELECT * FROM genesis.limits ORDER BY name"),
               ["name", "default_value", "max_value", "unit", "description"])


@limits.command("set")
@click.argument("name")
@click.option("--default", "default", type=float, required=True)
@click.option("--max", "maximum", type=float, required=True, help="No request can go above it.")
def limits_set(name: str, default: float, maximum: float) -> None:
    """Set limit NAME's default and maximum."""
    _run("SELECT genesis.set_limit(%s, %s::numeric, %s::numeric)", (name, default, maximum))
    click.echo(f"limit {name}: default {default:g}, max {maximum:g}")
