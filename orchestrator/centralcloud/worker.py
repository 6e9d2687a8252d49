"""CentralCloud worker: runs the Git jobs at their schedule (the SQL jobs run in pg_cron).

knowledge-export daily at 01:00 UTC (CENTRALCLOUD_EXPORT_REPO set), template-distribution every 4 hours
(CENTRALCLOUD_TEMPLATES_REPO set). A job is due when centralcloud.job_runs has no run of it since its
latest scheduled time, so a daemon that was down catches up once on start.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

from orchestrator.centralcloud.jobs import ROLE, connect_cc, run_job
from orchestrator.core.bus import Bus
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings
from orchestrator.infra.db import role_conninfo

log = logging.getLogger(__name__)


def last_slot(job: str, now: datetime) -> datetime:
    """The latest scheduled time of JOB at or before NOW (UTC)."""
    if job == "knowledge-export":
        t = now.replace(hour=1, minute=0, second=0, microsecond=0)
        return t if t <= now else t - timedelta(days=1)
    return now.replace(hour=now.hour - now.hour % 4, minute=0, second=0, microsecond=0)


def due_jobs(s: Settings, now: datetime | None = None) -> list[str]:
    """Git jobs configured and not run since their latest scheduled time."""
    now = now or datetime.now(UTC)
    wanted = [j for j, env in (("knowledge-export", "CENTRALCLOUD_EXPORT_REPO"),
                               ("template-distribution", "CENTRALCLOUD_TEMPLATES_REPO")) if os.environ.get(env)]
    if not wanted:
        return []
    with connect_cc(s) as c:
        return [j for j in wanted if not c.execute(
            "SELECT 1 FROM centralcloud.job_runs WHERE job = %s AND started_at >= %s", (j, last_slot(j, now))).fetchone()]


def tick(s: Settings) -> None:
    for job in due_jobs(s):
        log.info("centralcloud %s is due: %s", job, run_job(s, job))


def make(s: Settings) -> Worker:
    bus = Bus(role_conninfo(s, "shared_queue", ROLE), source="centralcloud", poll_ms=s.poll_ms, pool_size=1)
    return Worker(name="centralcloud", bus=bus, every_s=60, tick=lambda: tick(s), on_stop=bus.close)
