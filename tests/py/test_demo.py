"""End to end: `orchestrator demo` in two Singularity instances, then the knowledge both learned comes back to both.

Real everything: the CLI in a subprocess, the nexus/hitl/genesis workers it runs, the HITL page over HTTP
(sign-in + CSRF), bubblewrap, pg_cron-less job runs through the same SQL functions pg_cron calls, dblink.
"""

from __future__ import annotations

import os
import socket

import pytest

from helpers import run_cli
from orchestrator.centralcloud.jobs import run_job
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo, service_role
from orchestrator.infra.instances import add_instance, remove_instance

pytestmark = pytest.mark.timeout(300)

SECOND = "demo2"


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


@pytest.fixture(scope="module")
def two_instances(s):
    remove_instance(s, SECOND)
    add_instance(s, SECOND)
    yield ("default", SECOND)
    remove_instance(s, SECOND)


def _demo(instance: str) -> str:
    env = {**os.environ, "NEXUS_WEB_PORT": str(_free_port()), "ORCHESTRATOR_LOG_LEVEL": "WARNING"}
    r = run_cli("demo", "--instance", instance, "--timeout", "60", env=env, timeout=240)
    assert r.returncode == 0, f"demo in {instance} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _knowledge(s, db: str) -> dict:
    with connect(admin_conninfo(s, db)) as c:
        row = c.execute("SELECT instances, total_occurrences FROM core.global_knowledge WHERE key = 'python.fstring'"
                        ).fetchone()
    return dict(row) if row else {}


def _learned(s, db: str) -> int:
    with connect(admin_conninfo(s, db)) as c:
        row = c.execute("SELECT occurrences FROM core.learned_patterns WHERE key = 'python.fstring'").fetchone()
    return row["occurrences"] if row else 0


def _per_instance(c) -> dict[str, int]:
    return {r["instance_id"]: r["occurrences"] for r in c.execute(
        "SELECT instance_id, occurrences FROM centralcloud.instance_patterns WHERE key = 'python.fstring'")}


def test_demo_in_two_instances_brings_knowledge_back_to_both(s, two_instances):
    before = _learned(s, "singularity")
    outs = [_demo(i) for i in two_instances]
    for out in outs:
        for step in ("SQL scheduler assigns a task", "asks the LLM", "runs code", "approval via the HITL page",
                     "question via the HITL page", "folds the knowledge in", "== orchestrator queues",
                     "== orchestrator stats"):
            assert step in out, f"step {step!r} missing from the demo's output:\n{out}"
        assert "approved=True by demo" in out
        assert "exit 0, output 'mean 5'" in out

    # CentralCloud aggregated both instances' results once: each demo records 2 results mentioning python.fstring.
    with connect(owner_conninfo(s, "centralcloud")) as c:
        agg = c.execute("SELECT instances, total_occurrences FROM centralcloud.patterns WHERE key = 'python.fstring'"
                        ).fetchone()
        after = _per_instance(c)
    # each instance's count in CentralCloud is the instance's own count, which the demo raised by 2
    assert _learned(s, "singularity") == before + 2
    assert after["default"] == before + 2, (before, after)
    assert after[SECOND] == _learned(s, f"singularity_{SECOND}") == 2, after
    assert agg["instances"] == len(after) >= 2
    assert agg["total_occurrences"] == sum(after.values())

    # the fresh instance's agent waited for one request of each kind, end to end
    with connect(role_conninfo(s, f"singularity_{SECOND}", service_role("singularity", SECOND))) as c:
        st = {r["item"]: r["value"] for r in c.execute("SELECT * FROM core.queue_status()")}
    for kind in ("llm", "job", "approval", "question"):
        assert st[f"agent {kind} requests (24 h)"].startswith("1 answered, 0 waiting; p50 "), st

    # One more sync round: both instances now know that two instances saw it.
    assert not run_job(s, "pattern-sync").startswith("failed")
    for inst in two_instances:
        db = "singularity" if inst == "default" else f"singularity_{inst}"
        with connect(role_conninfo(s, db, service_role("singularity", inst))) as c:  # as pg_cron runs it
            r = c.execute("SELECT core.run_job('consume_inbox') AS r").fetchone()["r"]
            assert not r.startswith("failed"), r
        k = _knowledge(s, db)
        assert k and k["instances"] >= 2, f"{db}: {k}"
        assert k["total_occurrences"] == agg["total_occurrences"]


def test_the_demo_never_uses_another_systems_page_on_its_port(s):
    """Another checkout's page on NEXUS_WEB_PORT (here: any page without this system's x-orchestrator-system): the
    demo serves its own on a free port, prints that address, and runs through."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Foreign(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("x-orchestrator-system", "someone-else")
            self.end_headers()
            self.wfile.write(b"<form>sign in</form>")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    port = srv.server_address[1]
    Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "NEXUS_WEB_PORT": str(port), "ORCHESTRATOR_LOG_LEVEL": "WARNING"}
        r = run_cli("demo", "--timeout", "60", env=env, timeout=240)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert f"the page at http://127.0.0.1:{port}/ belongs to another system" in r.stdout
    served = [line for line in r.stdout.splitlines() if line.startswith("web page http://127.0.0.1:")]
    assert served and f":{port}/" not in served[0] and "approved=True by demo" in r.stdout
