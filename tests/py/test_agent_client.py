"""AgentClient: request/reply over the bus with a real responder thread; results survive a restart."""

from __future__ import annotations

import threading
import uuid

import pytest

from orchestrator.infra.db import admin_conninfo, connect
from orchestrator.singularity.agent import AgentClient


def responder(bus, queue: str, agent: str, answer, stop: threading.Event) -> threading.Thread:
    """Answer every request of AGENT on QUEUE with answer(body) on its reply_to."""
    def run() -> None:
        while not stop.is_set():
            for m in bus.read(queue, 5, vt_s=10, where={"agent_id": agent}):
                bus.reply_and_ack(m, m.body["reply_to"], {"request_id": m.body["id"], **answer(m.body)})
            stop.wait(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture
def agent_id() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def test_llm_round_trip_and_stored(s, bus_for, agent_id):
    stop = threading.Event()
    responder(bus_for("svc_nexus"), "llm_requests", agent_id,
              lambda b: {"type": "llm_result", "result": f"echo {b['messages'][0]['content']}", "model": "fake"}, stop)
    try:
        with AgentClient(agent_id, s=s) as a:
            r = a.ask_llm([{"role": "user", "content": "hi"}], task_type="chat", timeout=20)
            assert r["result"] == "echo hi" and r["model"] == "fake"
            assert a.pending() == []
    finally:
        stop.set()
    with connect(admin_conninfo(s, "singularity")) as c:
        row = c.execute("SELECT kind, result, completed_at FROM core.agent_results WHERE agent_id = %s", (agent_id,)).fetchone()
    assert row["kind"] == "llm" and row["result"]["result"] == "echo hi" and row["completed_at"]


def test_result_survives_a_client_restart(s, bus_for, agent_id):
    with AgentClient(agent_id, s=s) as a:
        rid = a.send("question", {"question": "ship it?", "options": ["yes", "no"]})
    # the agent is gone; a human answers meanwhile
    stop = threading.Event()
    responder(bus_for("svc_nexus"), "question_requests", agent_id,
              lambda b: {"type": "question_response", "response": "yes", "answered_by": "tester"}, stop)
    try:
        with AgentClient(agent_id, s=s) as b:
            assert b.pending() == [rid]
            r = b.result(rid, timeout=20)
            assert r["response"] == "yes" and r["request_id"] == rid
    finally:
        stop.set()
    # a third incarnation finds it in the database; the reply queue no longer has it
    with AgentClient(agent_id, s=s) as c:
        assert c.stored(rid)["answered_by"] == "tester"
        assert c.result(rid, timeout=0.1)["response"] == "yes"


def test_job_and_approval_and_errors(s, bus_for, agent_id):
    stop = threading.Event()
    responder(bus_for("svc_genesis"), "job_requests", agent_id,
              lambda b: {"type": "job_result", "output": "ok\n", "exit_code": 0, "duration_ms": 1}, stop)
    responder(bus_for("svc_nexus"), "approval_requests", agent_id,
              lambda b: {"type": "approval_response", "approved": True, "decided_by": "tester"}, stop)
    try:
        with AgentClient(agent_id, s=s) as a:
            assert a.run_job("print('ok')", timeout=20)["exit_code"] == 0
            assert a.request_approval("a.py", "-x\n+y\n", reason="why", timeout=20)["approved"] is True
            with pytest.raises(ValueError, match="unknown request kind"):
                a.send("nope", {})
            with pytest.raises(KeyError):
                a.result("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    finally:
        stop.set()
    with AgentClient(agent_id, s=s) as a:
        rid = a.send("llm", {"messages": [{"role": "user", "content": "nobody answers"}], "task_type": "chat"})
        with pytest.raises(TimeoutError, match="no reply on llm_results"):
            a.result(rid, timeout=0.5)
        assert rid in a.pending()
    with connect(admin_conninfo(s, "shared_queue")) as c:  # leave no orphan request behind
        c.execute("DELETE FROM pgmq.q_llm_requests WHERE message->>'id' = %s", (rid,))
