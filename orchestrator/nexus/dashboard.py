"""Figures for the dashboard page (and, through orchestrator.nexus.metrics, /metrics).

Bus figures come from shared_queue's bus.dashboard_* functions (SECURITY DEFINER wrappers over
bus.queue_overview(), bus.archived_messages, bus.archive_daily, bus.alerts() and bus.schedule_runs,
granted to svc_nexus); LLM calls,
budgets and HITL counts from nexus views. Charts are SVG made on the server (orchestrator.nexus.console.stacked_bars: axes, labels, a hover title per bar).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from markupsafe import Markup
from psycopg_pool import ConnectionPool

from orchestrator.nexus.console import Console, stacked_bars


def _rows(pool: ConnectionPool, sql: str, params: tuple = ()) -> list[dict]:
    with pool.connection() as c:
        return c.execute(sql, params).fetchall()


def bar_chart(points: list[tuple[str, float]], title: str, unit: str = "", width: int = 520, height: int = 160) -> Markup:
    """An SVG bar chart of (label, value) points with axes, labels and a hover title per bar (the console's
    stacked_bars with one series); labels are escaped."""
    return stacked_bars([label for label, _ in points], {title: [v for _, v in points]}, title, unit, width, height)


def hours_back(n: int, values: dict) -> list[tuple[str, float]]:
    """One point per hour for the last N hours (missing hours are 0), labelled HH:00."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [now - timedelta(hours=i) for i in range(n - 1, -1, -1)]
    return [(h.strftime("%H:00"), float(values.get(h, 0) or 0)) for h in hours]


class Dashboard:
    def __init__(self, bus_pool: ConnectionPool, nexus_pool: ConnectionPool):
        self.bus_pool = bus_pool
        self.nexus_pool = nexus_pool
        self.console = Console(bus_pool, nexus_pool)  # the console pages' data (orchestrator.nexus.console)

    def snapshot(self) -> dict:
        queues = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_overview()")
        hourly = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_hourly(24)")
        per_hour: dict = {}
        for r in hourly:
            h = per_hour.setdefault(r["hour"], {"messages": 0, "p95": 0.0})
            h["messages"] += r["messages"]
            h["p95"] = max(h["p95"], r["p95_latency_ms"] or 0.0)
        llm_hourly = {r["hour"]: r for r in _rows(self.nexus_pool, "SELECT * FROM nexus.calls_hourly")}
        return {
            "queues": queues,
            "depth": sum(q["queue_length"] for q in queues),
            "dead_letter_count": next((q["queue_length"] for q in queues if q["queue_name"] == "dead_letters"), 0),
            "throughput_chart": bar_chart(hours_back(24, {h: v["messages"] for h, v in per_hour.items()}),
                                          "messages processed per hour (24 h)"),
            "latency_chart": bar_chart(hours_back(24, {h: v["p95"] for h, v in per_hour.items()}),
                                       "p95 enqueue-to-archive latency per hour (24 h)", " ms"),
            "daily": _rows(self.bus_pool, "SELECT * FROM bus.dashboard_daily(14)"),
            "dead_letters": _rows(self.bus_pool, "SELECT * FROM bus.dashboard_dead_letters(20)"),
            "llm_chart": bar_chart(hours_back(48, {h: r["calls"] for h, r in llm_hourly.items()}),
                                   "LLM calls per hour (48 h)"),
            "llm_latency_chart": bar_chart(hours_back(48, {h: r["p50_latency_ms"] for h, r in llm_hourly.items()}),
                                           "LLM call p50 latency per hour (48 h)", " ms"),
            "calls": _rows(self.nexus_pool, "SELECT * FROM nexus.recent_calls LIMIT 20"),
            "budgets": _rows(self.nexus_pool, "SELECT * FROM nexus.budget_today ORDER BY cost DESC, agent_id"),
            "hitl": _rows(self.nexus_pool, "SELECT * FROM nexus.hitl_counts ORDER BY kind, status"),
            "decisions": _rows(self.nexus_pool, "SELECT * FROM nexus.hitl_recent LIMIT 10"),
            "alerts": _rows(self.bus_pool, "SELECT * FROM bus.dashboard_alerts()"),
            "schedules": _rows(self.bus_pool, "SELECT * FROM bus.dashboard_schedules()"),
        }

    def replay(self, dlq_id: int) -> int:
        return _rows(self.bus_pool, "SELECT bus.dashboard_dlq_replay(%s) AS id", (dlq_id,))[0]["id"]

    def prometheus(self) -> bytes:
        """/metrics in Prometheus' text format (orchestrator.nexus.metrics)."""
        from orchestrator.nexus.metrics import exposition

        return exposition(self.bus_pool, self.nexus_pool)
