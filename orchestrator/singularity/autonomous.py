"""Seed 003's AutonomousWorker calls on an instance: each one SQL function of the instance database,
called as its service role (what pg_cron runs them as)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo, service_role
from orchestrator.infra.instances import check_id, database
from orchestrator.infra.links import refresh_schedule_report

# `orchestrator autonomous <command>` -> the job core.run_job runs.
JOBS = {"learn-now": "learn_patterns", "knowledge-now": "update_knowledge", "sync-now": "sync_learning",
        "assign-now": "assign_tasks", "drain-now": "drain_outbox", "inbox-now": "consume_inbox",
        "metrics-now": "refresh_metrics", "cleanup-now": "cleanup_logs", "archive-now": "archive_tasks",
        "heartbeat-now": "heartbeat"}


def service_conn(s: Settings, instance: str = "default") -> psycopg.Connection:
    """The instance's service-role connection (what pg_cron jobs run as)."""
    check_id(instance)
    return connect(role_conninfo(s, database(instance), service_role("singularity", instance)))


def run_job(s: Settings, name: str, instance: str = "default") -> str:
    """core.run_job(NAME) in INSTANCE: 'ok: ...' or 'failed: <reason>'."""
    with service_conn(s, instance) as c:
        return c.execute("SELECT core.run_job(%s) AS r", (name,)).fetchone()["r"]


def queue_status(s: Settings, instance: str = "default") -> list[dict]:
    with service_conn(s, instance) as c:
        return c.execute("SELECT * FROM core.queue_status()").fetchall()


def jobs_status(s: Settings, instance: str = "default", cron: bool = False) -> list[dict]:
    """core.jobs_status(); with CRON, also pg_cron's own last run of each job, as pg_cron reports it to the
    bus each minute (bus.schedule_runs: no service role may read pg_cron's tables)."""
    with service_conn(s, instance) as c:
        rows = c.execute("SELECT * FROM core.jobs_status()").fetchall()
    if cron:
        refresh_schedule_report(s)
        db = database(instance)
        with connect(owner_conninfo(s, "shared_queue")) as sq:
            got = {r["jobname"].split(":", 1)[1]: r for r in sq.execute(
                """SELECT jobname, last_status AS cron_status, last_start AS cron_start,
                          round(extract(epoch FROM last_end - last_start)::numeric * 1000, 1) AS cron_ms,
                          left(last_message, 60) AS cron_message
                     FROM bus.dashboard_schedules() WHERE database = %s AND starts_with(jobname, %s)""",
                (db, f"{db}:"))}
        rows = [{**r, **{k: v for k, v in got.get(r["job"], {}).items() if k != "jobname"}} for r in rows]
    return rows


def cdc(s: Settings, instance: str = "default", what: str = "all", consume: bool = False, limit: int = 100) -> list[dict]:
    """Changes from the instance's CDC slot: what = all | patterns | sessions."""
    fn = {"all": "core.get_cdc_changes", "patterns": "core.get_pattern_changes",
          "sessions": "core.get_session_changes"}[what]
    with service_conn(s, instance) as c:
        return c.execute(sql.SQL("SELECT * FROM {}(%s, %s)").format(sql.SQL(fn)), (consume, limit)).fetchall()
