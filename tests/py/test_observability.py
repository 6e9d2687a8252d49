"""What operators watch (issue 16): /metrics through prometheus_client (histograms, counters, process and
build metrics, parsed here by its own parser), one log line per handled LLM request and per human decision,
connection errors collapsed, every line JSON when asked (the banner and the web server's too), and a taken
web port reported at start while the banner advertises only what is served."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT, wait_until
from orchestrator.infra.db import make_pool, role_conninfo

LLM = {"agent_id": "obs-agent", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pools(s):
    bus_pool = make_pool(role_conninfo(s, "shared_queue", "svc_nexus"), max_size=1)
    nexus_pool = make_pool(role_conninfo(s, "nexus", "svc_nexus"), max_size=1)
    yield bus_pool, nexus_pool
    bus_pool.close()
    nexus_pool.close()


def answer_one_request(s, bus_for):
    """Send one llm_requests message and let the nexus worker's handler answer it (offline model)."""
    from orchestrator.core.bus import SelfSettlingBus
    from orchestrator.nexus.router import Router
    from orchestrator.nexus.worker import make_handler

    bus_for("svc_singularity").publish("llm_requests", {**LLM, "id": f"obs-{time.time_ns()}"})
    nexus = SelfSettlingBus(role_conninfo(s, "shared_queue", "svc_nexus"), source="nexus")
    pool = make_pool(role_conninfo(s, "nexus", "svc_nexus"), max_size=1)
    router = Router(pool)
    try:
        msgs = wait_until(lambda: nexus.read("llm_requests", 1), 10, "the request")
        nexus.handle(msgs[0], make_handler(nexus, router))
    finally:
        router.close()
        pool.close()
        nexus.close()


def test_metrics_parse_with_histograms_counters_process_and_build_info(s, clean_queues, bus_for, pools, caplog):
    from prometheus_client.parser import text_string_to_metric_families

    from orchestrator.core import metrics
    from orchestrator.nexus.dashboard import Dashboard

    caplog.set_level(logging.INFO)
    answer_one_request(s, bus_for)
    metrics.handled("llm_requests", None)
    text = Dashboard(*pools).prometheus().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    kinds = {name: f.type for name, f in fams.items()}
    assert kinds["nexus_llm_request_duration_seconds"] == "histogram"
    assert kinds["orchestrator_message_latency_seconds"] == "histogram"
    for counter in ("nexus_llm_requests", "nexus_llm_calls", "nexus_llm_tokens", "bus_queue_messages",
                    "orchestrator_messages_handled", "nexus_hitl_decisions"):
        assert kinds[counter] == "counter", counter
    for gauge in ("bus_queue_depth", "bus_queue_oldest_message_age_seconds", "bus_alerts", "nexus_hitl_items"):
        assert kinds[gauge] == "gauge", gauge
    assert "process_resident_memory_bytes" in fams and "process_cpu_seconds" in fams
    build = [x for x in fams["orchestrator_build_info"].samples if x.name == "orchestrator_build_info"]
    assert build and build[0].labels["version"] and build[0].value == 1
    buckets = [x for x in fams["nexus_llm_request_duration_seconds"].samples if x.name.endswith("_bucket")]
    assert any(x.labels["le"] == "+Inf" and x.value >= 1 for x in buckets)
    assert not [n for n in fams if n.endswith("_24h")] and "quantile=" not in text
    # ...and the request was logged once, at INFO, with what answered it
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "llm_request"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].fields["agent_id"] == "obs-agent" and lines[0].fields["status"] == "ok"
    assert "answered by" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_human_decision_is_logged_once_at_info(caplog):
    from orchestrator.nexus.hitl import log_decision

    caplog.set_level(logging.INFO)
    log_decision("rq-1", "alice", True, None, "looks fine", {"status": "decided"})
    log_decision("rq-2", "bob", None, "use f-strings", None, {"status": "decided"})
    log_decision("rq-3", "carol", False, None, None, {"status": "recorded", "approvals": 1, "quorum": 2})
    text = [r.getMessage() for r in caplog.records if r.name == "orchestrator.nexus.hitl"]
    assert text[0] == "hitl: approval rq-1 approved by alice ('looks fine')"
    assert text[1] == "hitl: question rq-2 answered by bob: 'use f-strings'"
    assert "denied by carol" in text[2] and "1 of 2" in text[2]


def handler_with(window_s: float, as_json: bool = False):
    from orchestrator.infra.logs import CollapsingHandler, JsonFormatter

    out = io.StringIO()
    h = CollapsingHandler(out, window_s=window_s)
    h.setFormatter(JsonFormatter() if as_json else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return h, out


def record(msg: str, level=logging.WARNING, name="psycopg.pool", at: float = 0.0) -> logging.LogRecord:
    r = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    r.created = 1_000_000 + at
    return r


def test_repeated_connection_errors_are_one_line_with_a_count():
    h, out = handler_with(30)
    refused = "error connecting in 'bus:genesis': connection failed: connection to server at \"127.0.0.1\", port 1 " \
              "failed: Connection refused"
    for i in range(430):  # a 35 s outage, as the issue measured it
        h.emit(record(refused if i % 2 else "reading llm_requests failed (OperationalError); retrying in 2.0s",
                      name="psycopg.pool" if i % 2 else "orchestrator.core.bus", at=i * 35 / 430))
    h.emit(record("daemon reconnected", logging.INFO, "orchestrator", at=36))
    lines = out.getvalue().splitlines()
    assert len(lines) <= 4, lines
    assert "more database connection error(s)" in lines[1]
    counted = sum(int(line.split(" more database")[0].rsplit(" ", 1)[1]) for line in lines if " more database" in line)
    assert counted + sum(1 for line in lines if "more database" not in line and "reconnected" not in line) == 430
    assert lines[-1].endswith("daemon reconnected")
    # other lines are never held back, an LLM provider's refusal neither (it is not the database)
    h2, out2 = handler_with(30)
    for i in range(3):
        h2.emit(record(f"late ack ignored: msg {i}", at=i))
        h2.emit(record(f"request r{i}: m attempt 1 failed: [Errno 111] Connection refused", logging.INFO,
                       "orchestrator.nexus.router", at=i))
    assert len(out2.getvalue().splitlines()) == 6


def test_collapsed_lines_are_json_too():
    h, out = handler_with(30, as_json=True)
    for i in range(5):
        h.emit(record("notification connection lost (x); reconnecting in 2.0s", name="orchestrator.core.notify", at=i))
    h.emit(record("ok again", logging.INFO, at=6))
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert docs[1]["repeated"] == 4 and docs[1]["event"] == "connection_errors_collapsed"


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_a_taken_web_port_is_reported_with_the_fix_and_never_advertised(s, caplog, monkeypatch):
    from orchestrator.cli.main import _banner
    from orchestrator.nexus.hitl_worker import banner_line, build

    sock, port = taken_port()
    try:
        monkeypatch.setenv("NEXUS_WEB_PORT", str(port))
        _hitl, web, worker = build(s)
        web.start(required=False)
        worker.notice = banner_line(web)
        assert not web.serving
        assert f"cannot listen on 127.0.0.1:{port}" in caplog.text and "set NEXUS_WEB_PORT to a free port" in caplog.text
        banner = _banner(["hitl"], [worker])
        assert "web page: OFF" in banner and f"http://127.0.0.1:{port}" not in banner
        worker.on_stop()
    finally:
        sock.close()
    _hitl, web, worker = build(s, port=0)  # a free port: the banner prints the one really served
    web.start(required=True)
    try:
        worker.notice = banner_line(web)
        assert web.serving and web.port != 0 and f"{web.url}/" in _banner(["hitl"], [worker])
        # the page says whose it is, so the demo tells this system's page from another checkout's
        import httpx

        from orchestrator.infra.db import system_id

        mine = system_id(role_conninfo(s, "nexus", "svc_nexus"))
        assert httpx.get(f"{web.url}/login").headers["x-orchestrator-system"] == mine
    finally:
        worker.on_stop()


def test_every_daemon_line_is_json_when_asked_banner_and_web_server_too(s):
    env = {**os.environ, "ORCHESTRATOR_LOG_JSON": "1", "NEXUS_WEB_PORT": "0"}
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "hitl"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line parses
    banner = [d for d in docs if d.get("event") == "banner"]
    assert len(banner) == 1 and banner[0]["workers"] == ["hitl"]
    url = next(n for n in banner[0]["notices"] if "web page" in n)
    assert "http://127.0.0.1:" in url and ":0/" not in url
    assert any(d["logger"] == "orchestrator.nexus.hitl_worker" and "hitl page on" in d["msg"] for d in docs)
    assert out == ""


def test_uvicorn_lines_go_through_the_json_handler():
    from orchestrator.infra.logs import configure

    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        configure("INFO", as_json=True)
        stream = io.StringIO()
        logging.getLogger().handlers[0].setStream(stream)
        logging.getLogger("uvicorn.error").error("Exception in ASGI application")
        doc = json.loads(stream.getvalue().splitlines()[-1])
        assert doc["logger"] == "uvicorn.error" and doc["level"] == "error"
    finally:
        logging.getLogger().handlers[:], level = saved
        logging.getLogger().setLevel(level)
