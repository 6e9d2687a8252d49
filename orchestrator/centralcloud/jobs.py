"""CentralCloud jobs by name: the SQL ones are procedures in the `centralcloud` database (pg_cron runs
them too); knowledge-export and template-distribution are Git work (centralcloud_git.py).

`run_job(s, name) -> str` returns 'ok: ...', 'skipped: ...' or 'failed: <reason>'; every run is in
centralcloud.job_runs (`orchestrator centralcloud jobs`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import psycopg

from orchestrator.centralcloud import git as centralcloud_git
from orchestrator.centralcloud.git import GitJobError
from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, role_conninfo

log = logging.getLogger(__name__)

ROLE = "svc_centralcloud"
SQL_JOBS = {
    "aggregate": "job_aggregate",
    "statistics": "job_statistics",
    "package-sync": "job_package_sync",
    "pattern-sync": "job_pattern_sync",
    "heartbeats": "job_heartbeats",
}
GIT_JOBS = ("knowledge-export", "template-distribution")
JOBS = (*SQL_JOBS, *GIT_JOBS)


def connect_cc(s: Settings) -> psycopg.Connection:
    """svc_centralcloud's connection to the centralcloud database (autocommit: jobs commit per batch)."""
    return connect(role_conninfo(s, "centralcloud", ROLE))


def _error_text(e: Exception) -> str:
    diag = getattr(e, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(e)).strip()
    hint = diag.message_hint if diag else None
    return f"{text} ({hint})" if hint else text


def log_run(s: Settings, job: str, started: datetime, ok: bool, result: str) -> str:
    with connect_cc(s) as c:
        return c.execute("SELECT centralcloud._log_run(%s, %s, %s, %s) AS r", (job, started, ok, result)).fetchone()["r"]


def run_job(s: Settings, name: str) -> str:
    """Run job NAME now (names in JOBS; `_` and `-` are interchangeable)."""
    name = name.replace("_", "-")
    if name not in JOBS:
        return f"failed: unknown job {name!r}; jobs are {', '.join(JOBS)}"
    started = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        if name in SQL_JOBS:
            with connect_cc(s) as c:
                out = c.execute(f"CALL centralcloud.{SQL_JOBS[name]}(NULL)").fetchone()["result"]
        else:
            fn = centralcloud_git.knowledge_export if name == "knowledge-export" else centralcloud_git.template_distribution
            out = fn(s)
            logged = log_run(s, name, started, True, out.removeprefix("ok: "))
            out = out if out.startswith("skipped") else logged
    except (psycopg.Error, GitJobError) as e:
        reason = _error_text(e)
        log.error("centralcloud %s failed: %s", name, reason)
        try:
            out = log_run(s, name, started, False, reason)
        except psycopg.Error:
            out = f"failed: {reason}"
    log.info("centralcloud %s: %s (%.1fs)", name, out, time.monotonic() - t0)
    return out

