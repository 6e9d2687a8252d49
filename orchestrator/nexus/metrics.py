"""/metrics through prometheus_client: what this process measured (orchestrator.core.metrics: histograms of
latencies, counters of what it handled, build info, and the client's process_* and python_* metrics), then
the system's state read from the databases at scrape time (queue depths and ages, dead letters, alerts,
schedules, LLM totals, budgets, HITL items) by a collector, so one scrape of any daemon serving the page
sees the whole bus. Names follow Prometheus' conventions: base units (seconds), _total for counters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool


def _rows(pool: ConnectionPool, sql: str) -> list[dict]:
    with pool.connection() as c:
        return c.execute(sql).fetchall()


def family(kind, name: str, doc: str, labels: list[str], samples) -> Metric:
    """A gauge or counter family NAME with one sample per (label values, value) of SAMPLES."""
    m = kind(name, doc, labels=labels)
    for values, v in samples:
        m.add_metric([str(x) if x is not None else "-" for x in values], float(v or 0))
    return m


class DatabaseCollector(Collector):
    """The system's figures from shared_queue (bus.dashboard_*, granted to svc_nexus) and nexus, read per scrape."""

    def __init__(self, bus_pool: ConnectionPool, nexus_pool: ConnectionPool):
        self.bus_pool, self.nexus_pool = bus_pool, nexus_pool

    def collect(self) -> Iterator[Metric]:
        yield from self.bus()
        yield from self.schedules()
        yield from self.nexus()

    def bus(self) -> Iterator[Metric]:
        G, C = GaugeMetricFamily, CounterMetricFamily  # noqa: N806
        qs = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_overview()")
        q = ["queue"]
        yield family(G, "bus_queue_depth", "Messages in the queue (visible or leased).", q,
                     [((r["queue_name"],), r["queue_length"]) for r in qs])
        yield family(G, "bus_queue_visible", "Messages ready to be read.", q,
                     [((r["queue_name"],), r["visible"]) for r in qs])
        yield family(G, "bus_queue_oldest_message_age_seconds", "Age of the oldest message in the queue.", q,
                     [((r["queue_name"],), r["oldest_age_s"]) for r in qs])
        yield family(C, "bus_queue_messages", "Messages ever sent to the queue (pgmq's total).", q,
                     [((r["queue_name"],), r["total_messages"]) for r in qs])
        yield family(G, "bus_dead_letters", "Dead letters waiting, by original queue.", q,
                     [((r["queue_name"],), r["dead_letters"]) for r in qs])
        alerts = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_alerts()")
        yield family(G, "bus_alerts", "Alerts now (orchestrator alerts), by severity.", ["severity"],
                     [((sev,), sum(1 for a in alerts if a["severity"] == sev)) for sev in ("warning", "critical")])

    def schedules(self) -> Iterator[Metric]:
        G = GaugeMetricFamily  # noqa: N806
        sch = _rows(self.bus_pool, "SELECT * FROM bus.dashboard_schedules()")
        yield family(G, "pg_cron_job_last_run_failed", "1 if the schedule's last run failed, by job.", ["job"],
                     [((j["jobname"],), 1 if j["last_status"] == "failed" else 0) for j in sch])
        yield family(G, "pg_cron_job_last_run_timestamp_seconds", "When the schedule's last run started (Unix time).",
                     ["job"], [((j["jobname"],), j["last_start"].timestamp()) for j in sch if j["last_start"]])
        if sch:
            age = (datetime.now(UTC) - max(j["reported_at"] for j in sch)).total_seconds()
            yield family(G, "pg_cron_report_age_seconds", "Seconds since pg_cron last reported the schedules.", [],
                         [((), age)])

    def nexus(self) -> Iterator[Metric]:
        G, C = GaugeMetricFamily, CounterMetricFamily  # noqa: N806
        tot = _rows(self.nexus_pool, "SELECT * FROM nexus.call_totals")
        pm = ["provider", "model"]
        yield family(C, "nexus_llm_calls", "LLM attempts and refusals by provider, model and status (every daemon; "
                     "from nexus.llm_calls, which retention prunes).", [*pm, "status"],
                     [((r["provider"], r["model"], r["status"]), r["calls"]) for r in tot])
        yield family(C, "nexus_llm_tokens", "Tokens by provider, model and direction (every daemon).", [*pm, "direction"],
                     [((r["provider"], r["model"], "in"), r["tokens_in"]) for r in tot]
                     + [((r["provider"], r["model"], "out"), r["tokens_out"]) for r in tot])
        yield family(C, "nexus_llm_cost", "Cost of LLM calls at the models' prices (every daemon).", pm,
                     [((r["provider"], r["model"]), r["cost"]) for r in tot])
        bud = _rows(self.nexus_pool, "SELECT * FROM nexus.budget_today")
        yield family(G, "nexus_budget_used_tokens", "Tokens used or reserved today (UTC) per agent.", ["agent"],
                     [((b["agent_id"],), b["tokens"]) for b in bud])
        yield family(G, "nexus_budget_used_cost", "Cost used or reserved today (UTC) per agent.", ["agent"],
                     [((b["agent_id"],), b["cost"]) for b in bud])
        yield family(G, "nexus_hitl_items", "HITL items by kind and status.", ["kind", "status"],
                     [((h["kind"], h["status"]), h["items"])
                      for h in _rows(self.nexus_pool, "SELECT * FROM nexus.hitl_counts")])


def exposition(bus_pool: ConnectionPool, nexus_pool: ConnectionPool) -> bytes:
    """The text /metrics serves: this process's registry, then the databases' figures."""
    from orchestrator.core import metrics  # noqa: F401 - registers this process's metrics and build info

    db = CollectorRegistry(auto_describe=False)
    db.register(DatabaseCollector(bus_pool, nexus_pool))
    return generate_latest(REGISTRY) + generate_latest(db)
