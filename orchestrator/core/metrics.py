"""What this process measures, in Prometheus' client (prometheus_client's default registry, which also
carries the process_* and python_* metrics): latencies as histograms, totals as counters. Served on the
web page's /metrics with the figures read from the databases (orchestrator.nexus.metrics)."""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Histogram, Info

# Seconds: from milliseconds (a local model, a wake-up) to the long tail of a provider or a person.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

MESSAGES_HANDLED = Counter("orchestrator_messages_handled_total",
                           "Messages this process's consumers handled (answered, failed or dead-lettered), by queue.",
                           ["queue"])
MESSAGE_LATENCY = Histogram("orchestrator_message_latency_seconds",
                            "Enqueue-to-handled time of the messages this process's consumers handled, by queue.",
                            ["queue"], buckets=LATENCY_BUCKETS)
LLM_REQUESTS = Counter("nexus_llm_requests_total", "LLM requests this process answered, by model and status "
                       "(ok, or error: refused, over budget, every model failed).", ["model", "status"])
LLM_LATENCY = Histogram("nexus_llm_request_duration_seconds",
                        "Time to answer an LLM request (every attempt and fallback), by model and status.",
                        ["model", "status"], buckets=LATENCY_BUCKETS)
LLM_TOKENS = Counter("nexus_llm_request_tokens_total", "Tokens of the LLM requests this process answered, by model "
                     "and direction (in: prompt, out: completion).", ["model", "direction"])
HITL_DECISIONS = Counter("nexus_hitl_decisions_total", "Human decisions recorded through this process's page, and "
                         "approvals denied at their deadline, by kind and outcome.", ["kind", "outcome"])
BUILD = Info("orchestrator_build", "The orchestrator's version and the Python it runs on.")


def package_version() -> str:
    try:
        return version("orchestrator")
    except PackageNotFoundError:
        return "unknown"


BUILD.info({"version": package_version(), "python": platform.python_version()})


def handled(queue: str, enqueued_at: datetime | None) -> None:
    """One message handled by a consumer of this process."""
    MESSAGES_HANDLED.labels(queue=queue).inc()
    if enqueued_at is not None:
        MESSAGE_LATENCY.labels(queue=queue).observe(max(0.0, (datetime.now(UTC) - enqueued_at).total_seconds()))


def since(t0: float) -> float:
    """Seconds since T0 (time.monotonic())."""
    return time.monotonic() - t0
