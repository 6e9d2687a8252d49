"""Helpers for benchmarks: timing, percentiles, connections to the running cluster."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

from orchestrator.infra.cluster import Cluster
from orchestrator.infra.config import settings
from orchestrator.infra.migrate import migrate


def ready():
    """Settings for a started, migrated cluster."""
    s = settings()
    if not s.external:
        Cluster(s).start()
    migrate(s, progress=lambda _m: None)
    return s


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def timer():
    box = {}
    t0 = time.perf_counter()
    yield box
    box["s"] = time.perf_counter() - t0
