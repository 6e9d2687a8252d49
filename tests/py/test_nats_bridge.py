"""Seed 001's migration from NATS, phase 1 on a real nats-server (core NATS): an agent still on NATS asks
with `nc.request` and gets its answer from the real workers; a refused message is answered with why;
the same message twice is one pgmq message; a result reaches its asker when a person decides."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from datetime import UTC, datetime

import nats
import pytest
from nats_tools import NatsServer, running_bridge

from helpers import wait_until
from orchestrator.core.messages import ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.infra.db import connect, owner_conninfo

pytestmark = pytest.mark.slow


@pytest.fixture
def nats_server(tmp_path):
    srv = NatsServer(tmp_path / "nats", jetstream=False)
    srv.store.mkdir()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def ledger_clean(s):
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("DELETE FROM nats.requests")
        c.execute("SELECT nats.set_phase(1, 'test')")


@pytest.fixture
def bridge(s, nats_server, ledger_clean, clean_queues):
    with running_bridge(s, {"NATS_URL": nats_server.url}) as b:
        yield b


@pytest.fixture
def nexus(s):
    """The nexus router worker (offline provider: no network), as the daemon runs it."""
    from orchestrator.nexus.worker import make

    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("SELECT nexus.set_route('*', ARRAY['offline'])")
    sup = Supervisor([make(s)], grace_s=5)
    sup.start()
    yield
    sup.request_stop()
    sup.shutdown()


def ask(url: str, subject: str, payload, timeout: float = 20.0, raw: bool = False) -> dict:
    """What an agent on NATS does: `await nc.request(subject, payload)`; the reply as JSON."""
    async def go():
        nc = await nats.connect(url)
        try:
            data = payload if raw else json.dumps(payload).encode()
            r = await nc.request(subject, data, timeout=timeout)
            return json.loads(r.data)
        finally:
            await nc.close()
    return asyncio.run(go())


def ledger(s, key: str) -> dict | None:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        return c.execute("SELECT * FROM nats.requests WHERE request_key = %s", (key,)).fetchone()


def llm(text: str, **kw) -> dict:
    return {"agent_id": "nats-agent", "task_type": "nats-bridge", "messages": [{"role": "user", "content": text}], **kw}


def test_an_agent_on_nats_gets_its_llm_result(s, bridge, nexus, nats_server):
    rid = ulid()
    got = ask(nats_server.url, "llm_requests", llm("hello over nats", id=rid))
    assert got["request_id"] == rid and got["model"] == "offline" and "hello over nats" in got["result"], got
    row = wait_until(lambda: (r := ledger(s, rid)) and r["status"] == "answered" and r, 10, "the request answered")
    assert row["via"] == "core" and row["result_queue"] == "llm_results_nats"
    with connect(owner_conninfo(s, "shared_queue")) as c:
        [sent] = c.execute("SELECT message, headers FROM pgmq.a_llm_requests WHERE msg_id = %s", (row["msg_id"],))
    # the bus stamped the bridge's identity; the reply went to the bridge's own reply queue
    assert sent["headers"]["sender"] == "svc_nats" and sent["message"]["reply_to"] == "llm_results_nats"
    # an agent that sends no id still gets its answer (the bus stamps one)
    got = ask(nats_server.url, "llm_requests", llm("no id"))
    assert got["model"] == "offline" and "no id" in got["result"] and got["request_id"]


@pytest.mark.parametrize("kind", ["approval", "question"])
def test_an_approval_or_answer_arrives_when_a_person_decides(s, bridge, nats_server, kind):
    from orchestrator.nexus.hitl_worker import build

    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("TRUNCATE nexus.hitl_decisions, nexus.hitl_items")
    h, _web, worker = build(s, host="127.0.0.1", port=0)
    rid, out = ulid(), {}
    body = ({"id": rid, "agent_id": "nats-agent", "file_path": "README.md", "diff": "+over nats"} if kind == "approval"
            else {"id": rid, "agent_id": "nats-agent", "question": "ship it?", "options": ["yes", "no"]})
    t = threading.Thread(target=lambda: out.update(ask(nats_server.url, f"{kind}_requests", body, timeout=60)))
    t.start()
    try:
        wait_until(lambda: h.tick() or any(i["request_id"] == rid for i in h.pending(kind)), 20,
                   f"the {kind} to reach the page")
        time.sleep(0.5)
        assert not out, "no reply before the decision"
        vote = {"approved": True} if kind == "approval" else {"response": "yes"}
        assert h.decide(rid, "alice", **vote)["status"] == "decided"
        t.join(30)
    finally:
        worker.on_stop()
    assert out["request_id"] == rid, out
    if kind == "approval":
        assert out["approved"] is True and out["decided_by"] == "alice", out
    else:
        assert out["response"] == "yes" and out["answered_by"] == "alice", out
    wait_until(lambda: ledger(s, rid)["status"] == "answered", 10, f"the {kind} marked answered")


def test_a_malformed_message_gets_an_error_reply_that_says_why(s, bridge, nats_server):
    got = ask(nats_server.url, "llm_requests", b"{not json", raw=True)
    assert "not JSON" in got["error"] and got["queue"] == "llm_requests"
    got = ask(nats_server.url, "job_requests", [1, 2], timeout=10)
    assert "not an object" in got["error"]
    rid = ulid()
    got = ask(nats_server.url, "llm_requests", {"id": rid, "agent_id": "a", "task_type": "t"})
    assert "messages" in got["error"] and got["request_id"] == rid, got   # the bus's own words
    rid2 = ulid()
    got = ask(nats_server.url, "llm_requests", llm("steal", id=rid2, reply_to="llm_results"))
    assert "reply_to" in got["error"] and "llm_results" in got["error"], got  # trust: not the bridge's queue
    rows = [ledger(s, rid), ledger(s, rid2)]
    assert all(r["status"] == "rejected" and r["payload"] and r["error"] for r in rows)
    with connect(owner_conninfo(s, "shared_queue")) as c:
        n = c.execute("SELECT count(*) AS n FROM nats.requests WHERE status = 'rejected'").fetchone()["n"]
        assert n == 4  # none dropped silently: the two undecodable ones are recorded with their payload
        assert not c.execute("SELECT 1 FROM pgmq.q_llm_requests WHERE message->>'id' IN (%s, %s)", (rid, rid2)).fetchone()


def test_the_same_message_twice_is_one_pgmq_message(s, bridge, nats_server):
    rid = ulid()
    body = llm("twice", id=rid)

    async def go():
        nc = await nats.connect(nats_server.url)
        inbox = nc.new_inbox()
        replies = []
        async def got(m):
            replies.append(json.loads(m.data))
        sub = await nc.subscribe(inbox, cb=got)
        for _ in range(2):
            await nc.publish("llm_requests", json.dumps(body).encode(), reply=inbox)
        await nc.flush()
        await asyncio.sleep(1.0)
        other = await nc.request("llm_requests", json.dumps(llm("other content", id=rid)).encode(), timeout=10)
        await sub.unsubscribe()
        await nc.close()
        return replies, json.loads(other.data)

    replies, other = asyncio.run(go())
    assert replies == [], "a duplicate is not answered with an error (its answer is on the way)"
    wait_until(lambda: (ledger(s, rid) or {}).get("duplicates") == 1, 10, "the duplicate counted")
    with connect(owner_conninfo(s, "shared_queue")) as c:
        n = c.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests WHERE message->>'id' = %s", (rid,)).fetchone()["n"]
    assert n == 1
    assert "already used for a different request" in other["error"], other


def test_phase_2_takes_no_new_core_requests_and_status_says_what_is_left(s, bridge, nats_server, run_cli):
    rid = ulid()
    async def send():
        nc = await nats.connect(nats_server.url)
        await nc.publish("llm_requests", json.dumps(llm("pending", id=rid)).encode(), reply="agent.inbox.1")
        await nc.flush()
        await nc.close()
    asyncio.run(send())
    wait_until(lambda: ledger(s, rid), 10, "the request taken")
    env = {"NATS_URL": nats_server.url}
    r = run_cli("nats", "phase", "3", env=env)
    assert r.returncode != 0 and "still wait for their answer" in r.stdout + r.stderr
    r = run_cli("nats", "phase", "2", env=env, check=True)
    assert "phase 2" in r.stdout
    bridge.tick()
    wait_until(lambda: not bridge.subs, 5, "the core subscriptions to end")
    with pytest.raises(nats.errors.NoRespondersError):
        ask(nats_server.url, "llm_requests", llm("after cutover"), timeout=3)
    r = run_cli("nats", "status", "--days", "1", env=env, check=True)
    assert "pending bridged requests: 1" in r.stdout and "NATS can be removed: no" in r.stdout, r.stdout
    assert "llm_requests" in r.stdout
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("SELECT pgmq.purge_queue('llm_requests')")
        c.execute("UPDATE nats.requests SET status = 'answered', answered_at = now() WHERE request_key = %s", (rid,))
    st = json.loads(run_cli("nats", "status", "--json", env=env, check=True).stdout)
    assert st["removable"] is True and st["pending"] == 0 and st["traffic"][0]["requests"] >= 1
    run_cli("nats", "phase", "3", env=env, check=True)
    run_cli("nats", "phase", "1", env=env, check=True)


def test_without_nats_url_the_daemon_runs_no_bridge(run_cli):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    r = run_cli("daemon", "--only", "nats", env={**env, "NATS_URL": ""}, timeout=60)
    assert r.returncode != 0 and "set NATS_URL" in r.stderr, r.stderr


def test_daemon_only_nats_runs_the_bridge_and_stops_cleanly(s, nats_server, ledger_clean, clean_queues, tmp_path):
    import signal
    import subprocess
    import sys

    from helpers import ROOT

    log = tmp_path / "daemon.log"
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "nats"], cwd=ROOT,
                             env={**os.environ, "NATS_URL": nats_server.url}, stdout=fh, stderr=fh)
    try:
        wait_until(lambda: "NATS bridge takes requests" in log.read_text(), 30, "the bridge to subscribe")
        assert "at-most-once" in log.read_text()  # core mode says so
        rid = ulid()

        async def send():
            nc = await nats.connect(nats_server.url)
            await nc.publish("llm_requests", json.dumps(llm("via the daemon", id=rid)).encode())
            await nc.flush()
            await nc.close()
        asyncio.run(send())
        row = wait_until(lambda: ledger(s, rid), 10, "the request in the ledger")
        assert row["status"] == "enqueued" and row["msg_id"]
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
    assert rc == 0, log.read_text()


def test_settings_are_checked_and_subjects_are_configurable(s, nats_server, ledger_clean, clean_queues):
    from orchestrator.nats.settings import NatsSettings

    assert not NatsSettings.from_env({}).enabled
    for bad, word in [({"NATS_URL": "localhost:4222"}, "nats://host:port"), ({"NATS_URL": "nats://x", "NATS_MODE": "js"},
                      "jetstream"), ({"NATS_URL": "nats://x", "NATS_SUBJECT_LLM_REQUESTS": "llm.*"}, "wildcards"),
                      ({"NATS_URL": "nats://x", "NATS_SUBJECT_JOB_REQUESTS": "llm_requests"}, "of its own"),
                      ({"NATS_URL": "nats://x", "NATS_STREAM": "a.b"}, "stream name")]:
        with pytest.raises(SystemExit, match=word):
            NatsSettings.from_env(bad)
    env = {"NATS_URL": nats_server.url, "NATS_SUBJECT_LLM_REQUESTS": "agents.llm"}
    with running_bridge(s, env):
        got = ask(nats_server.url, "agents.llm", {"id": ulid(), "agent_id": "a", "task_type": "t"})
        assert got["queue"] == "llm_requests" and got["subject"] == "agents.llm" and "messages" in got["error"]
        with pytest.raises(nats.errors.NoRespondersError):
            ask(nats_server.url, "llm_requests", llm("old subject"), timeout=3)


def test_core_nats_with_postgres_away_the_asker_is_told(s, nats_server, ledger_clean, clean_queues, nexus):
    """At-most-once, but never silent: core NATS keeps nothing, so the asker hears that it must send again."""
    from chaos_tools import CuttableProxy
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from orchestrator.infra.db import role_conninfo

    d = conninfo_to_dict(role_conninfo(s, "shared_queue", "svc_nats"))
    proxy = CuttableProxy(int(d["port"]))
    d["port"] = proxy.port
    try:
        with running_bridge(s, {"NATS_URL": nats_server.url}, conninfo=make_conninfo(**d)):
            proxy.cut()
            got = ask(nats_server.url, "llm_requests", llm("while away"), timeout=30)
            assert "database is unavailable" in got["error"] and "send again" in got["error"], got
            proxy.heal()
            rid = ulid()
            for _ in range(5):  # the pool reconnects within seconds; until then the asker is told again
                got = ask(nats_server.url, "llm_requests", llm("back", id=rid), timeout=30)
                if "unavailable" not in got.get("error", ""):
                    break
                time.sleep(1)
            assert got["model"] == "offline" and got["request_id"] == rid, got  # back: taken and answered
    finally:
        proxy.close()


def test_a_job_sent_over_nats_runs_in_genesis_and_its_output_comes_back(s, bridge, nats_server, monkeypatch):
    from genesis_tools import forget_genesis_heartbeats

    from orchestrator.genesis.worker import make

    since = datetime.now(UTC)
    monkeypatch.setenv("GENESIS_CONCURRENCY", "1")
    sup = Supervisor([make(s)], grace_s=5)
    sup.start()
    try:
        rid = ulid()
        got = ask(nats_server.url, "job_requests", {"id": rid, "code": "print(6 * 7)", "language": "python",
                                                    "mode": "run"}, timeout=60)
    finally:
        sup.request_stop()
        sup.shutdown()
        forget_genesis_heartbeats(s, since)
    assert got["request_id"] == rid and got["exit_code"] == 0 and got["stdout"] == "42\n", got


def test_status_without_nats_url_says_no_bridge_runs(ledger_clean, run_cli):
    r = run_cli("nats", "status", env={"NATS_URL": ""}, check=True)
    assert "NATS_URL -; mode unset (no bridge runs)" in r.stdout and "pending bridged requests: 0" in r.stdout
    assert "NATS can be removed: no; phase 1" in r.stdout  # until the cutover is declared
