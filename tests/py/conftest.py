"""Fixtures against the real local PostgreSQL (the embedded cluster, migrated once per session)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator.bus import Bus
from orchestrator.config import Settings, settings
from orchestrator.db import admin_conninfo, connect, owner_conninfo, role_conninfo

ROOT = Path(__file__).resolve().parents[2]
ORCH = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture(scope="session")
def s() -> Settings:
    st = settings()
    if not st.external:
        from orchestrator.cluster import Cluster

        Cluster(st).start()
    from orchestrator.migrate import migrate

    migrate(st, progress=lambda _m: None)
    return st


@pytest.fixture
def admin(s) -> Iterator:
    """Superuser connection factory: admin('shared_queue')."""
    conns: list[psycopg.Connection] = []

    def make(dbname: str = "postgres") -> psycopg.Connection:
        c = connect(admin_conninfo(s, dbname))
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


@pytest.fixture
def sq_owner(s) -> Iterator[psycopg.Connection]:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        yield c


@pytest.fixture
def clean_queues(s) -> None:
    """Empty every live queue (not archives) so a test starts from nothing."""
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for r in c.execute("SELECT queue_name FROM bus.queues").fetchall():
            c.execute("SELECT pgmq.purge_queue(%s)", (r["queue_name"],))


@pytest.fixture
def bus_for(s) -> Iterator:
    """Bus factory per role: bus_for('svc_nexus'). Closed at teardown."""
    made: list[Bus] = []

    def make(role: str, **kw) -> Bus:
        b = Bus(role_conninfo(s, "shared_queue", role), source=role, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `orchestrator ARGS...` in a subprocess (as a user would)."""
    r = subprocess.run([*ORCH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env={**os.environ, **(env or {})}, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"orchestrator {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r
