"""Fixtures against the real local PostgreSQL (the embedded cluster, migrated once per session)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import psycopg
import pytest

from helpers import ROOT, run_cli  # noqa: F401  (tests/py is on sys.path)
from orchestrator.core.bus import Bus
from orchestrator.infra.config import Settings, settings
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo


@pytest.fixture(scope="session")
def s() -> Settings:
    st = settings()
    if not st.external:
        from orchestrator.infra.cluster import Cluster

        Cluster(st).start()
    from orchestrator.infra.migrate import migrate

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


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """`run_cli('queues')` runs the CLI in a subprocess (also importable: from helpers import run_cli)."""
    return run_cli


CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through playwright (never a downloaded browser), one per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()
