"""Figures for the dashboard page and /metrics: bus queues (shared_queue) and LLM calls, budgets, HITL (nexus)."""

from __future__ import annotations

from psycopg_pool import ConnectionPool


class Dashboard:
    def __init__(self, bus_pool: ConnectionPool, nexus_pool: ConnectionPool):
        self.bus_pool = bus_pool
        self.nexus_pool = nexus_pool

    def snapshot(self) -> dict:
        return {}

    def replay(self, dlq_id: int) -> int:
        raise NotImplementedError

    def prometheus(self) -> str:
        return ""
