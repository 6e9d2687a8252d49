"""NEXUS_HITL_WEBHOOK: each new approval or question is POSTed (summary and a link to it on the page) to a
real local HTTP server; a redelivery is not announced twice; a receiver that fails is tried again."""

from __future__ import annotations

import time

import pytest

from helpers import Receiver, wait_until
from orchestrator.infra.db import connect, owner_conninfo


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hitl_with_hook(s, receiver, monkeypatch):
    from orchestrator.nexus.hitl_worker import build

    with connect(owner_conninfo(s, "shared_queue")) as c:
        for q in ("approval_requests", "question_requests"):
            c.execute("SELECT pgmq.purge_queue(%s)", (q,))
    monkeypatch.setenv("NEXUS_HITL_WEBHOOK", receiver.url)
    monkeypatch.setenv("NEXUS_HITL_WEBHOOK_TOKEN", "h00k")
    monkeypatch.setenv("NEXUS_HITL_LEASE_S", "2")
    hitl, web, worker = build(s, host="127.0.0.1", port=0)
    web.start()
    yield hitl, web, worker
    worker.on_stop()


def test_new_requests_are_announced_once_with_a_link(s, bus_for, receiver, hitl_with_hook):
    hitl, web, worker = hitl_with_hook
    sing = bus_for("svc_singularity")
    tag = str(time.time_ns())
    sing.publish("approval_requests", {"id": f"ap-{tag}", "agent_id": "hook-agent", "file_path": "lib/greeter.py",
                                       "diff": "-a\n+b\n", "reason": "use an f-string"})
    sing.publish("question_requests", {"id": f"q-{tag}", "agent_id": "hook-agent", "question": "Tabs or spaces?",
                                       "options": ["tabs", "spaces"]})

    def announced():
        worker.tick()
        return len(receiver.bodies) >= 2 and receiver.bodies

    bodies = {b["kind"]: b for b in wait_until(announced, 15, "two announcements")}
    ap, q = bodies["approval"], bodies["question"]
    assert ap["summary"] == "hook-agent asks to approve a change to lib/greeter.py: use an f-string"
    assert ap["url"] == f"{web.url}/approvals#approval-ap-{tag}" and ap["request_id"] == f"ap-{tag}"
    assert q["summary"] == "hook-agent asks: Tabs or spaces? (options: tabs, spaces)"
    assert q["url"] == f"{web.url}/questions#question-q-{tag}" and q["text"].endswith(q["url"])
    assert receiver.auth == ["Bearer h00k", "Bearer h00k"]
    # the link opens the page (it asks to sign in first)
    import httpx

    assert httpx.get(ap["url"], follow_redirects=False).status_code in (200, 303)
    # the leases are renewed and the requests stay held: nothing is announced again
    for _ in range(10):
        worker.tick()
        time.sleep(0.2)
    assert len(receiver.bodies) == 2


def test_a_failing_receiver_is_tried_again(s, bus_for, receiver, hitl_with_hook):
    hitl, web, worker = hitl_with_hook
    receiver.status = 503
    tag = str(time.time_ns())
    bus_for("svc_singularity").publish("question_requests", {"id": f"q2-{tag}", "agent_id": "hook-agent",
                                                             "question": "Ship it?"})

    def tried():
        worker.tick()
        return receiver.bodies

    wait_until(tried, 15, "a first attempt")
    receiver.status = 200
    worker.tick()
    assert [b["request_id"] for b in receiver.bodies] == [f"q2-{tag}", f"q2-{tag}"]
    worker.tick()
    assert len(receiver.bodies) == 2


def test_a_malformed_webhook_setting_is_refused_with_the_fix(monkeypatch):
    from orchestrator.infra.settings import SettingError
    from orchestrator.nexus.settings import NexusSettings

    with pytest.raises(SettingError, match="NEXUS_HITL_WEBHOOK='hooks.example.com'.*http"):
        NexusSettings.from_env({"NEXUS_HITL_WEBHOOK": "hooks.example.com"})
