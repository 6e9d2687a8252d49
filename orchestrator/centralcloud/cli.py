"""`orchestrator centralcloud ...` (jobs, patterns, instances, templates, exports) and `orchestrator stats`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import fail, json_option, say, sql_rows, table


def _cc():
    from orchestrator.centralcloud.jobs import connect_cc

    return connect_cc(settings())


def _rows(sql: str, params: tuple = ()) -> list[dict]:
    return sql_rows(_cc, sql, params)


def _show(sql: str, cols: list[str], params: tuple = ()) -> None:

    table(_rows(sql, params), cols)


@click.group()
def centralcloud() -> None:
    """CentralCloud: aggregated learning, instance registry, templates, exports, jobs."""


@centralcloud.command("run")
@click.argument("job")
def run(job: str) -> None:
    """Run JOB now: aggregate, statistics, package-sync, pattern-sync, knowledge-export,
    template-distribution, heartbeats (or `all`, in that order)."""
    from orchestrator.centralcloud.jobs import GIT_JOBS, JOBS, run_job
    from orchestrator.centralcloud.settings import CentralCloudSettings

    _cc().close()  # connect first: a server that is down is said once, with the fix (cli.main.Cli), before any job
    names = list(JOBS) if job == "all" else [job]
    if job == "all":  # Git jobs only where configured
        configured = CentralCloudSettings.from_env().configured()
        names = [n for n in names if n not in GIT_JOBS or n in configured]
    failed = False
    for name in names:
        out = run_job(settings(), name)
        click.echo(f"{name}: {out}" if job == "all" else out)
        failed = failed or out.startswith("failed")
    if failed:
        sys.exit(1)


@centralcloud.command("jobs")
@json_option
def jobs() -> None:
    """The last run of every job and its outcome."""
    _show("SELECT * FROM centralcloud.job_status ORDER BY job", ["job", "started_at", "finished_at", "ok", "result"])


@centralcloud.command("patterns")
@click.option("--limit", default=20, show_default=True)
@click.option("--kind", default=None, help="Only patterns of this kind.")
@json_option
def patterns(limit: int, kind: str | None) -> None:
    """Aggregated patterns, best ranked first."""
    _show("SELECT rank, key, kind, instances, total_occurrences, confidence, packages FROM centralcloud.patterns"
          " WHERE %s::text IS NULL OR kind = %s ORDER BY rank LIMIT %s",
          ["rank", "key", "kind", "instances", "total_occurrences", "confidence", "packages"], (kind, kind, limit))


@centralcloud.command("packages")
@click.option("--limit", default=20, show_default=True)
@json_option
def packages(limit: int) -> None:
    """Package and framework catalogue with usage counts."""
    _show("SELECT * FROM centralcloud.packages ORDER BY occurrences DESC, package LIMIT %s",
          ["package", "patterns", "instances", "occurrences", "updated_at"], (limit,))


@centralcloud.command("instances")
@json_option
def instances() -> None:
    """Instance registry from heartbeats: healthy, late or gone."""
    _show("SELECT * FROM centralcloud.instance_status ORDER BY instance_id, service",
          ["instance_id", "service", "status", "last_seen", "age_s", "first_seen"])


@centralcloud.command("templates")
@json_option
def templates() -> None:
    """Templates distributed to instances: version, hash, commit."""
    _show("SELECT path, version, left(hash, 12) AS hash, left(commit, 12) AS commit, deleted, updated_at"
          " FROM centralcloud.templates ORDER BY path",
          ["path", "version", "hash", "commit", "deleted", "updated_at"])


@centralcloud.command("exports")
@click.option("--limit", default=20, show_default=True)
@json_option
def exports(limit: int) -> None:
    """Knowledge exports to Git."""
    _show("SELECT exported_at, branch, left(commit, 12) AS commit, artifacts_count, pushed, pr_url, repo"
          " FROM centralcloud.exports ORDER BY id DESC LIMIT %s",
          ["exported_at", "branch", "commit", "artifacts_count", "pushed", "pr_url", "repo"], (limit,))


@click.command("stats")
@click.option("--days", default=7, show_default=True, help="How many UTC days back.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the same as charts to this PNG file.")
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Run the statistics job first (reads the shared_queue archives).")
@json_option
def stats(days: int, plot_file: Path | None, refresh: bool) -> None:
    """Counts per type per day, p50/p95 queue latency, approval rate, questions per agent, top patterns,
    LLM usage and cost (from the shared_queue archives, through CentralCloud)."""
    from orchestrator.centralcloud import stats as st
    from orchestrator.centralcloud.jobs import ROLE, run_job
    from orchestrator.infra.db import connect, read_conninfo

    if days < 1:
        fail(f"--days must be at least 1, got {days}")
    if plot_file:
        _check_plot_file(plot_file)
    s = settings()
    # first connect: a server that is down is reported with the fix (cli.main.Cli); the report reads through
    # CENTRALCLOUD_READ_DB_URL (a replica) when one is set
    with connect(read_conninfo(s, "centralcloud", ROLE)) as c:
        if refresh:
            out = run_job(s, "statistics")
            if out.startswith("failed"):
                fail(f"statistics job {out}")
        data = st.collect(c, days)
    for name, (title, _q, cols) in st.QUERIES.items():
        say(f"\n== {title}")
        table(data[name], cols, name=name)
    if plot_file:
        st.plot(data, plot_file, days)
        say(f"\nwrote {plot_file}")


PLOT_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "webp")


def _check_plot_file(path: Path) -> None:
    """Before any work: --plot names an image file in a folder that exists."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        what = f".{suffix} is not an image format this writes" if suffix else "the name has no extension"
        fail(f"--plot {path}: {what}; end the name with one of {', '.join('.' + f for f in PLOT_FORMATS)}, e.g. --plot stats.png")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        fail(f"--plot {path}: the folder {folder} does not exist; create it (mkdir -p {folder}) or name another")
