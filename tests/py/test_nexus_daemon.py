"""`orchestrator daemon --only nexus,hitl` as a user runs it: the page listens, requests are answered, SIGTERM exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from helpers import ROOT


def test_daemon_runs_router_and_page_and_stops_cleanly(s, bus_for, tmp_path):
    log = tmp_path / "daemon.log"
    env = {**os.environ, "NEXUS_WEB_PORT": "0", "NEXUS_HITL_TICK_S": "0.2"}
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "nexus,hitl"],
                             cwd=ROOT, env=env, stdout=fh, stderr=fh)
    try:
        url, end = None, time.monotonic() + 20
        while url is None and time.monotonic() < end:
            m = re.search(r"hitl page on (http://\S+)", log.read_text())
            url = m.group(1) if m else None
            time.sleep(0.1)
        assert url, log.read_text()
        r = httpx.get(url + "/approvals", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        sing = bus_for("svc_singularity")
        out = sing.request("llm_requests", {"agent_id": "daemon-test", "task_type": "daemon-smoke",
                                            "messages": [{"role": "user", "content": "are you there"}]},
                           reply_to="llm_results", timeout=20)
        assert out["model"] == "offline" and "are you there" in out["result"]
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
    assert rc == 0, log.read_text()
    assert "daemon stopped" in log.read_text()


def test_a_busy_port_is_reported_and_only_fatal_when_required(caplog):
    import socket

    import pytest

    from orchestrator.nexus.hitl_worker import WebServer

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        web = WebServer(object(), "127.0.0.1", port).start(required=False)
        assert web.server is None and f"cannot listen on 127.0.0.1:{port}" in caplog.text
        assert "NEXUS_WEB_PORT" in caplog.text
        web.stop()
        with pytest.raises(SystemExit, match="set NEXUS_WEB_PORT to a free port"):
            WebServer(object(), "127.0.0.1", port).start(required=True)
    finally:
        taken.close()
