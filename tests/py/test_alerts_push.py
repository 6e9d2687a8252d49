"""The daemon's alert pusher: new and cleared alerts reach a real webhook; a failing webhook is retried."""

from __future__ import annotations

import time

import pytest

from helpers import Receiver, wait_until
from orchestrator.core.alerts import AlertPusher
from orchestrator.core.bus import Bus
from orchestrator.infra.db import role_conninfo

LLM = {"agent_id": "a1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def low_thresholds(s, admin):
    a = admin("shared_queue")
    old = {r["key"]: r["value"] for r in a.execute("SELECT key, value FROM bus.settings WHERE key LIKE 'alert%'")}
    a.execute("SELECT bus.set_setting('alert_oldest_s', '1')")
    # no heartbeat turns late while a test runs: the default instance beats through its outbox once a
    # minute, so with the 60 s default its alert comes and goes on its own (seen: "singularity:default:
    # no heartbeat for 61 s" pushed as new in the middle of this test)
    a.execute("SELECT bus.set_setting('alert_heartbeat_late_s', '86400')")
    yield
    a.execute("DELETE FROM bus.settings WHERE key LIKE 'alert%'")
    for k, v in old.items():
        a.execute("SELECT bus.set_setting(%s, %s)", (k, v))


def test_new_and_cleared_alerts_reach_the_webhook_and_failures_are_retried(s, clean_queues, sq_owner, receiver,
                                                                          low_thresholds):
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"), pool_size=1)
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=1)
    try:
        pusher = AlertPusher(nexus, receiver.url, token="t0ken")
        pusher.sent = pusher.current()  # what was already alerting before this test is not this test's business
        sender.publish("llm_requests", LLM)
        # wait for the message to get older than alert_oldest_s (1 s) with nobody consuming it
        wait_until(lambda: any(k[1] == "llm_requests" for k in pusher.current()), 15, "the llm_requests alert")

        receiver.status = 503  # the receiver is down: nothing is marked as sent
        assert pusher.check() == {}
        assert len(receiver.bodies) == 1

        receiver.status = 200  # back: the same alert is pushed at the next check
        got = pusher.check()
        assert [a["subject"] for a in got["new"]] == ["llm_requests"]
        assert "oldest message has waited" in got["new"][0]["message"] and got["new"][0]["fix"]
        assert receiver.bodies[-1]["new"][0]["subject"] == "llm_requests"
        assert receiver.auth[-1] == "Bearer t0ken"

        assert pusher.check() == {}  # nothing changed: nothing pushed again
        assert len(receiver.bodies) == 2

        sq_owner.execute("SELECT pgmq.purge_queue('llm_requests')")
        got = pusher.check()
        assert got["cleared"] == [{"severity": "warning", "subject": "llm_requests"}] and got["new"] == []
        assert receiver.bodies[-1]["cleared"][0]["subject"] == "llm_requests"
    finally:
        nexus.close()
        sender.close()


def test_alerts_and_queue_figures_are_in_prometheus_metrics(s, clean_queues, bus_for):
    from orchestrator.infra.db import make_pool
    from orchestrator.nexus.dashboard import Dashboard

    one, two = bus_for("svc_singularity"), bus_for("svc_nexus")
    one.publish("llm_requests", LLM)
    two.ack(two.read("llm_requests", 1)[0])
    bus_pool = make_pool(role_conninfo(s, "shared_queue", "svc_nexus"), max_size=1)
    nexus_pool = make_pool(role_conninfo(s, "nexus", "svc_nexus"), max_size=1)
    try:
        text = Dashboard(bus_pool, nexus_pool).prometheus()
    finally:
        bus_pool.close()
        nexus_pool.close()
    text = text.decode()
    assert 'bus_queue_messages_total{queue="llm_requests"}' in text
    assert 'bus_queue_oldest_message_age_seconds{queue="llm_requests"}' in text
    assert 'bus_alerts{severity="critical"}' in text


def test_a_service_that_stopped_on_purpose_is_not_late_but_a_crashed_one_is(s, admin, sq_owner):
    from orchestrator.core.heartbeat import beat, last_beat

    a = admin("shared_queue")
    old = {r["key"]: r["value"] for r in a.execute("SELECT key, value FROM bus.settings WHERE key LIKE 'alert%'")}
    a.execute("SELECT bus.set_setting('alert_heartbeat_late_s', '1')")
    g = Bus(role_conninfo(s, "shared_queue", "svc_genesis"), pool_size=1)
    try:
        beat(g, "crashed", "genesis")          # then nothing: a kill -9
        beat(g, "stopped", "genesis")
        last_beat(g, "stopped", "genesis")     # a graceful shutdown says so
        stopped_at = time.monotonic()
        # both are past alert_heartbeat_late_s (1 s) once the crashed one alerts, and the stopped one 1 s later
        wait_until(lambda: "genesis:crashed" in {r["subject"] for r in a.execute("SELECT subject FROM bus.alerts()")},
                   15, "the crashed service's alert")
        wait_until(lambda: time.monotonic() - stopped_at > 1.2, 5, "the stopped service's last beat to be late", 0.1)
        subjects = {r["subject"] for r in a.execute("SELECT subject FROM bus.alerts()")}
        assert "genesis:crashed" in subjects
        assert "genesis:stopped" not in subjects
    finally:
        g.close()
        sq_owner.execute("DELETE FROM pgmq.q_instance_heartbeat WHERE message->>'instance_id' IN ('crashed', 'stopped')")
        a.execute("DELETE FROM bus.settings WHERE key LIKE 'alert%'")
        for k, v in old.items():
            a.execute("SELECT bus.set_setting(%s, %s)", (k, v))
