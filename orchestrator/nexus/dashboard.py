"""Figures for the dashboard page and /metrics.

Bus figures come from shared_queue's bus.dashboard_* functions (SECURITY DEFINER wrappers over
bus.queue_overview(), bus.archived_messages, bus.archive_daily, bus.alerts() and bus.schedule_runs,
granted to svc_nexus); LLM calls,
budgets and HITL counts from nexus views. Charts are inline SVG made here (no JavaScript).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

from markupsafe import Markup
from psycopg_pool import ConnectionPool


def _rows(pool: ConnectionPool, sql: str, params: tuple = ()) -> list[dict]:
    with pool.connection() as c:
        return c.execute(sql, params).fetchall()


def bar_chart(points: list[tuple[str, float]], title: str, unit: str = "", width: int = 520, height: int = 120) -> Markup:
    """An SVG bar chart of (label, value) points; labels are escaped."""
    if not points or not any(v for _, v in points):
        return Markup(f'<p class="meta">{escape(title)}: no data yet</p>')
    top = max(v for _, v in points) or 1.0
    bw = width / len(points)
    bars = []
    for i, (label, v) in enumerate(points):
        h = (height - 20) * v / top
        bars.append(f'<rect x="{i * bw + 1:.1f}" y="{height - 15 - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="#57a"><title>{escape(label)}: {_num(v)}{escape(unit)}</title></rect>')
    first, last = escape(points[0][0]), escape(points[-1][0])
    return Markup(f'<figure><figcaption>{escape(title)} (max {_num(top)}{escape(unit)})</figcaption>'
                  f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">{"".join(bars)}'
                  f'<text x="0" y="{height - 2}" font-size="10">{first}</text>'
                  f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{last}</text></svg></figure>')


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def hours_back(n: int, values: dict) -> list[tuple[str, float]]:
    """One point per hour for the last N hours (missing hours are 0), labelled HH:00."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [now - timedelta(hours=i) for i in range(n - 1, -1, -1)]
    return [(h.strftime("%H:00"), float(values.get(h, 0) or 0)) for h in hours]


def _label(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Dashboard:
    def __init__(self, bus_pool: ConnectionPool, nexus_pool: ConnectionPool):
        self.bus_pool = bus_pool
        self.nexus_pool = nexus_pool

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

    def prometheus(self) -> str:
        """The same figures in Prometheus' text format."""
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}")
            for labels, v in samples:
                lab = ",".join(f'{k}="{_label(val)}"' for k, val in labels.items())
                out.append(f"{name}{{{lab}}} {float(v or 0)}" if lab else f"{name} {float(v or 0)}")

        qs = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_overview()")
        metric("bus_queue_depth", "gauge", "Messages in the queue (visible or leased).",
               [({"queue": q["queue_name"]}, q["queue_length"]) for q in qs])
        metric("bus_queue_visible", "gauge", "Messages ready to be read.",
               [({"queue": q["queue_name"]}, q["visible"]) for q in qs])
        metric("bus_queue_oldest_age_seconds", "gauge", "Age of the oldest message in the queue.",
               [({"queue": q["queue_name"]}, q["oldest_age_s"]) for q in qs])
        metric("bus_queue_messages_total", "counter", "Messages ever sent to the queue.",
               [({"queue": q["queue_name"]}, q["total_messages"]) for q in qs])
        metric("bus_dead_letters", "gauge", "Dead letters waiting, by original queue.",
               [({"queue": q["queue_name"]}, q["dead_letters"]) for q in qs])
        lat = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_latency(60)")
        metric("bus_queue_latency_seconds", "gauge",
               "Enqueue-to-archive (= request handled) latency over the last hour, by queue and quantile.",
               [({"queue": r["queue_name"], "quantile": q}, r[f"p{int(float(q) * 100)}_s"])
                for r in lat for q in ("0.5", "0.95", "0.99")])
        metric("bus_queue_archived_last_hour", "gauge", "Messages archived (handled) in the last hour.",
               [({"queue": r["queue_name"]}, r["messages"]) for r in lat])
        al = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_alerts()")
        metric("bus_alerts", "gauge", "Alerts now (orchestrator alerts), by severity.",
               [({"severity": sev}, sum(1 for a in al if a["severity"] == sev)) for sev in ("warning", "critical")])
        sch = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_schedules()")
        metric("pg_cron_job_last_run_failed", "gauge", "1 if the schedule's last run failed, by job.",
               [({"job": j["jobname"]}, 1 if j["last_status"] == "failed" else 0) for j in sch])
        metric("pg_cron_job_runs_24h", "gauge", "Runs of the schedule in the last 24 h, by job.",
               [({"job": j["jobname"]}, j["runs_24h"]) for j in sch])
        metric("pg_cron_job_failures_24h", "gauge", "Failed runs of the schedule in the last 24 h, by job.",
               [({"job": j["jobname"]}, j["failures_24h"]) for j in sch])
        if sch:
            age = (datetime.now(UTC) - max(j["reported_at"] for j in sch)).total_seconds()
            metric("pg_cron_report_age_seconds", "gauge", "Seconds since pg_cron last reported the schedules.",
                   [({}, age)])
        tot = _rows(self.nexus_pool, "SELECT * FROM nexus.call_totals")
        key = lambda r: {"provider": r["provider"] or "-", "model": r["model"] or "-"}  # noqa: E731
        metric("nexus_llm_calls_total", "counter", "LLM attempts and refusals by provider, model and status.",
               [({**key(r), "status": r["status"]}, r["calls"]) for r in tot])
        metric("nexus_llm_tokens_total", "counter", "Tokens by provider, model and direction.",
               [({**key(r), "direction": "in"}, r["tokens_in"]) for r in tot]
               + [({**key(r), "direction": "out"}, r["tokens_out"]) for r in tot])
        metric("nexus_llm_cost_total", "counter", "Cost of LLM calls (model prices).", [(key(r), r["cost"]) for r in tot])
        metric("nexus_llm_latency_seconds_total", "counter", "Summed latency of LLM attempts.",
               [(key(r), r["latency_s"]) for r in tot])
        bud = _rows(self.nexus_pool, "SELECT * FROM nexus.budget_today")
        metric("nexus_budget_tokens_used", "gauge", "Tokens used or reserved today per agent.",
               [({"agent": b["agent_id"]}, b["tokens"]) for b in bud])
        metric("nexus_budget_cost_used", "gauge", "Cost used or reserved today per agent.",
               [({"agent": b["agent_id"]}, b["cost"]) for b in bud])
        metric("nexus_hitl_items", "gauge", "HITL items by kind and status.",
               [({"kind": h["kind"], "status": h["status"]}, h["items"])
                for h in _rows(self.nexus_pool, "SELECT * FROM nexus.hitl_counts")])
        return "\n".join(out) + "\n"
