"""`orchestrator archive ...`: cold storage of the bus's archives (orchestrator.infra.cold_storage)."""

from __future__ import annotations

from datetime import date

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import fail, json_option, say, table

queue_arg = click.argument("queue")
day_arg = click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))


def _storage():
    from orchestrator.infra.cold_storage import ColdStorage

    return ColdStorage(settings())  # a database or file error reaches the CLI's one error path (cli.main)


@click.group()
def archive() -> None:
    """Cold storage: archive rows past SHARED_QUEUE_RETENTION_DAYS go to files under
    SHARED_QUEUE_COLD_STORAGE_DIR before retention deletes them; restore brings a day back."""


@archive.command("export")
@click.option("--limit", default=1000, show_default=True, help="At most this many (queue, day) files.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Then delete the exported, verified days from the live archives.")
def export(limit: int, prune: bool) -> None:
    """Export every (queue, UTC day) past retention not exported yet (the daemon does it hourly)."""
    with _storage() as cs:
        out = cs.export(limit, prune, progress=lambda r: click.echo(f"{r['queue']} {r['day']}: {r['result']}"))
    if not out:
        click.echo(f"nothing to export: no archive row is older than the retention ({settings().retention_days} days)")
    if any(r["result"].startswith("failed") for r in out):
        fail("some days were not exported (above); their rows stay in the live archives until they are")


@archive.command("list")
@json_option
def list_() -> None:
    """Exported, pruned, restored and waiting days, with their files."""
    with _storage() as cs:
        rows = cs.catalog()
        say(f"cold storage: {cs.root}")
    table(rows, ["queue_name", "day", "state", "rows", "bytes", "on_disk", "restored_rows", "file", "note"])


@archive.command("verify")
def verify() -> None:
    """Read back every exported file and compare it with its manifest and the catalog."""
    with _storage() as cs:
        out = cs.verify()
    for r in out:
        click.echo(f"{r['queue']} {r['day']}: {r['result']}")
    if not out:
        click.echo("nothing exported yet")
    if not all(r["ok"] for r in out):
        fail("some files failed verification (above); days whose rows are still live stay until exported again")


@archive.command("restore")
@queue_arg
@day_arg
def restore(queue: str, day) -> None:
    """Make QUEUE's DAY (YYYY-MM-DD, UTC) queryable again next to the live archives (bus.archived_messages),
    and recompute that day's statistics (orchestrator stats --days N shows it)."""
    d: date = day.date()
    with _storage() as cs:
        n = cs.restore(queue, d)
    click.echo(f"{queue} {d}: {n} rows restored (analytics shows each row once, live or restored)")
    _refresh_stats(d)


@archive.command("unrestore")
@queue_arg
@day_arg
def unrestore(queue: str, day) -> None:
    """Drop a restored day again (its file stays in cold storage)."""
    d: date = day.date()
    with _storage() as cs:
        n = cs.unrestore(queue, d)
    click.echo(f"{queue} {d}: {n} restored rows removed")


def _refresh_stats(d: date) -> None:
    from orchestrator.centralcloud.jobs import connect_cc
    from orchestrator.centralcloud.stats import refresh_days

    with connect_cc(settings()) as c:
        r = refresh_days(c, d, d)
    click.echo(f"statistics for {d} recomputed: {r}")
