"""The bus under pg_auto_failover: a monitor, a primary and a synchronous secondary (orchestrator/infra/ha.py).

1,000 requests in flight, `kill -9` of the primary (its postmaster, and its pg_autoctl, which would otherwise
restart it in place: the machine is lost), automatic failover; every request answered exactly once, the time
to recover printed, and pg_cron running on the new primary. `make test-ha` runs this file alone.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from chaos_tools import EchoResponder, collect_results

from orchestrator.core.bus import Bus
from orchestrator.infra.config import Settings
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo

pytestmark = [pytest.mark.timeout(400),
              pytest.mark.skipif(shutil.which("pg_autoctl") is None,
                                 reason="pg_autoctl missing: make setup installs postgresql-15-auto-failover")]

LLM = {"task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def ha():
    """A fresh HA pair in .state/ha-test with the bus (shared_queue and pg_cron's postgres) migrated onto it."""
    from orchestrator.infra.ha import HaCluster
    from orchestrator.infra.migrate import Target, migrate

    h = HaCluster(Settings(), name="ha-test")
    h.destroy()
    try:
        t0 = time.monotonic()
        h.start()
        env = {**os.environ, **h.env(("shared_queue", "centralcloud")),
               "ORCHESTRATOR_SECRETS_FILE": str(h.base / "secrets.env")}
        s = Settings.from_env(env)
        migrate(s, progress=lambda _m: None, only=[Target("shared_queue", "shared_queue"), Target("centralcloud", "centralcloud"),
                                                   Target("postgres", "postgres")])
        print(f"\nHA pair up and the bus migrated onto it in {time.monotonic() - t0:.1f}s")
        yield h, s, env
    finally:
        h.destroy()


def _served_by(s) -> int:
    with connect(role_conninfo(s, "shared_queue", "svc_nexus")) as c:
        return c.execute("SELECT inet_server_port() AS p").fetchone()["p"]


def test_a_read_replica_serves_centralclouds_statistics(ha):
    """CENTRALCLOUD_READ_DB_URL: `orchestrator stats` reads through the secondary (the statistics job still
    writes on the primary)."""
    from helpers import run_cli
    from orchestrator.infra.db import read_conninfo

    h, s, env = ha
    standby = h.url("centralcloud").replace("target_session_attrs=read-write", "target_session_attrs=standby")
    env = {**env, "CENTRALCLOUD_READ_DB_URL": standby}
    with connect(read_conninfo(Settings.from_env(env), "centralcloud", "svc_centralcloud")) as c:
        assert c.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"], "the read URL must reach the standby"
    r = run_cli("stats", "--days", "1", env=env)
    assert r.returncode == 0 and "== Messages per type per day" in r.stdout, r.stdout + r.stderr


def test_failover_loses_and_duplicates_nothing(ha):
    h, s, _env = ha
    assert h.states() == {"node1": ("primary", "primary"), "node2": ("secondary", "secondary")}
    with connect(admin_conninfo(s, "postgres")) as c:
        assert c.execute("SHOW synchronous_standby_names").fetchone()["synchronous_standby_names"] != "", \
            "the primary must wait for the secondary: a commit a worker saw must survive the failover"
    old = h.primary()
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=2)
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"), poll_ms=200, vt_s=5, pool_size=4)
    ids = [m["id"] for m in (sender.stamp("llm_requests", {**LLM, "agent_id": f"a{i}"}) for i in range(1000))]
    for chunk in range(0, 1000, 100):
        sender.publish_batch("llm_requests", [{**LLM, "agent_id": "x", "id": i} for i in ids[chunk:chunk + 100]])
    with EchoResponder(nexus, concurrency=3) as echo:
        while echo.count < 200:
            time.sleep(0.02)
        killed_at = time.monotonic()
        h.kill(old)
        answered_before = echo.count
        while echo.count <= answered_before + 5 and time.monotonic() - killed_at < 120:
            time.sleep(0.05)
        recovered = time.monotonic() - killed_at
        with connect(owner_conninfo(s, "shared_queue")) as owner:
            counts = collect_results(owner, "llm_results", set(ids), timeout=120)
        assert echo.alive(), "a worker thread died"
    sender.close()
    nexus.close()
    print(f"\nfailover: primary {old} killed (-9) with {1000 - answered_before} of 1000 requests unanswered; "
          f"workers answering again on the new primary after {recovered:.1f}s; states {h.states()}")
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} requests never answered"
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not dups, f"duplicate results: {list(dups.items())[:5]}"
    assert h.primary() != old and _served_by(s) == h.ports()[h.primary()]
    assert recovered < 60, f"recovery took {recovered:.1f}s"

    # pg_cron runs on whichever node is primary: the next minute's report runs on the new one
    deadline = time.monotonic() + 75
    with connect(admin_conninfo(s, "postgres")) as c:
        since = c.execute("SELECT now() - make_interval(secs => %s) AS t", (time.monotonic() - killed_at,)).fetchone()["t"]
        ran = 0
        while not ran and time.monotonic() < deadline:
            ran = c.execute("SELECT count(*) AS n FROM cron.job_run_details WHERE start_time > %s AND status = 'succeeded'",
                            (since,)).fetchone()["n"]
            time.sleep(1)
    assert ran, "no pg_cron job ran on the new primary within 75 s"
