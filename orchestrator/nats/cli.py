"""`orchestrator nats ...`: the migration from NATS (seed 001): move between phases, see what is left."""

from __future__ import annotations

import asyncio
import json

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import fail, sql_error_text, table

PHASES = {1: "both active: the bridge takes NATS requests into pgmq and answers over NATS",
          2: "cutover: agents publish to pgmq; the bridge takes no new NATS requests, drains the JetStream "
             "stream and still answers bridged requests over NATS",
          3: "retired: nothing is taken from NATS; NATS can be removed"}


def _owner():
    from orchestrator.infra.db import connect, owner_conninfo

    return connect(owner_conninfo(settings(), "shared_queue"))


def _nats_settings():
    from orchestrator.nats.settings import NatsSettings

    return NatsSettings.from_env()


@click.group()
def nats() -> None:
    """The NATS bridge and the migration from NATS (docs/nats.md)."""


@nats.command()
@click.argument("number", type=click.IntRange(1, 3), required=False)
@click.option("--note", default=None, help="Why (kept with the phase).")
def phase(number: int | None, note: str | None) -> None:
    """Show the migration phase, or move to NUMBER (1 both active, 2 cutover, 3 retired).

    Phase 3 is refused while bridged requests wait for their answers or the stream holds messages."""
    import psycopg

    from orchestrator.nats.ledger import register

    ns = _nats_settings()
    if number is not None:
        if number == 3 and ns.enabled and ns.mode == "jetstream":
            left = asyncio.run(_backlog(ns))
            if left.get("error") or left["pending"] or left["unacked"]:
                fail(f"phase 3 refused: the stream {ns.stream} is not drained ({left}); stay in phase 2 until "
                     "`orchestrator nats status` says NATS can be removed")
        register(settings())  # the bridge's identity exists before any phase is set
        try:
            with _owner() as c:
                c.execute("SELECT nats.set_phase(%s, %s)", (number, note))
        except psycopg.Error as e:
            fail(f"phase {number} refused: {sql_error_text(e)}")
    with _owner() as c:
        st = c.execute("SELECT nats.status(1) AS s").fetchone()["s"]
    click.echo(f"phase {st['phase']} (since {st['phase_since']}): {PHASES[st['phase']]}")
    if ns.enabled and ns.mode == "core" and st["phase"] == 1:
        click.echo("NATS_MODE=core: at-most-once; a request sent while no bridge listens is lost "
                   "(NATS_MODE=jetstream keeps them)")


async def _backlog(ns) -> dict:
    from orchestrator.nats.bridge import stream_backlog

    return await stream_backlog(ns)


@nats.command()
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650), help="Traffic over this many days.")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
def status(days: int, as_json: bool) -> None:
    """Traffic per subject, pending bridged requests, and whether NATS can be removed."""
    ns = _nats_settings()
    with _owner() as c:
        st = c.execute("SELECT nats.status(%s) AS s", (days,)).fetchone()["s"]
        rows = c.execute("SELECT * FROM nats.traffic(%s)", (days,)).fetchall()
    backlog = asyncio.run(_backlog(ns)) if ns.enabled and ns.mode == "jetstream" else None
    why_not = []
    if st["phase"] < 2:
        why_not.append(f"phase {st['phase']}: move to phase 2 first (orchestrator nats phase 2)")
    if st["pending"]:
        why_not.append(f"{st['pending']} bridged request(s) still wait for an answer that goes back over NATS")
    if backlog and (backlog.get("error") or backlog["pending"] or backlog["unacked"]):
        why_not.append(f"the stream {ns.stream} is not drained: {backlog}")
    out = {**st, "settings": {"url": ns.url, "mode": ns.mode, "subjects": ns.subjects,
                              "stream": ns.stream if ns.mode == "jetstream" else None},
           "stream": backlog, "traffic": rows, "removable": not why_not, "why_not": why_not}
    if as_json:
        click.echo(json.dumps(out, default=str, indent=2))
        return
    mode = "unset (no bridge runs)" if not ns.enabled else (
        f"{ns.mode}" + (" (at-most-once)" if ns.mode == "core" else f", stream {ns.stream}"))
    click.echo(f"phase {st['phase']}: {PHASES[st['phase']]}\nNATS_URL {ns.url or '-'}; mode {mode}")
    click.echo(f"traffic over the last {days} day(s): {st['requests']} request(s); last at {st['last_request_at'] or '-'}")
    if rows:
        table(rows, ["subject", "queue", "via", "requests", "enqueued", "answered", "rejected", "duplicates",
                     "pending", "last_at"])
    click.echo(f"pending bridged requests: {st['pending']}" + (f" (oldest {st['oldest_pending']})" if st["pending"] else ""))
    if backlog is not None:
        click.echo(f"stream {ns.stream}: {backlog}")
    click.echo("NATS can be removed: yes (then unset NATS_URL and run `orchestrator nats phase 3`)" if not why_not
               else "NATS can be removed: no; " + "; ".join(why_not))
