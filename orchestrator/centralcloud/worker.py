"""CentralCloud worker: runs the Git jobs at their schedule (the SQL jobs run in pg_cron).

Their schedule is data (centralcloud.git_schedule: knowledge-export daily at 01:00 UTC when
CENTRALCLOUD_EXPORT_REPO is set, template-distribution every 4 hours when CENTRALCLOUD_TEMPLATES_REPO is).
A job is due when centralcloud.job_runs has no run of it since its latest scheduled time, so a daemon
that was down catches up once on start.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from orchestrator.centralcloud.jobs import ROLE, connect_cc, run_job
from orchestrator.centralcloud.settings import CentralCloudSettings
from orchestrator.core.bus import Bus
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings

log = logging.getLogger(__name__)


def last_slot(s: Settings, job: str, now: datetime) -> datetime:
    """The latest scheduled time of JOB at or before NOW (centralcloud.git_slot: the schedule is data)."""
    with connect_cc(s) as c:
        return c.execute("SELECT centralcloud.git_slot(%s, %s) AS t", (job, now)).fetchone()["t"]


def due_jobs(s: Settings, now: datetime | None = None, cs: CentralCloudSettings | None = None) -> list[str]:
    """Git jobs configured and not run since their latest scheduled time (centralcloud.git_jobs_due)."""
    configured = (cs or CentralCloudSettings.from_env()).configured()
    if not configured:
        return []
    with connect_cc(s) as c:
        return [r["j"] for r in c.execute("SELECT centralcloud.git_jobs_due(%s, %s) AS j",
                                          (configured, now or datetime.now(UTC)))]


def tick(s: Settings) -> None:
    for job in due_jobs(s):
        log.info("centralcloud %s is due: %s", job, run_job(s, job))


def make(s: Settings) -> Worker:
    bus = Bus.for_role(s, ROLE, source="centralcloud", pool_size=1)
    return Worker(name="centralcloud", bus=bus, every_s=60, tick=lambda: tick(s), on_stop=bus.close)
