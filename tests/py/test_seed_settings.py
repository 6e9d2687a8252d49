"""Seed 001's settings do what they say, and the seeds' foreign clients work unchanged: the official pgmq
Python client sends, reads and monitors as a service role; SHARED_QUEUE_ENABLED=false runs the system
without the bus (nothing lost); SHARED_QUEUE_BATCH_SIZE and SHARED_QUEUE_MAX_ATTEMPTS take effect;
operator commands go where SHARED_QUEUE_DB_URL says; Nexus sends heartbeats."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.core.bus import Bus, BusError
from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo
from orchestrator.infra.migrate import Target, migrate


def test_the_official_pgmq_client_sends_reads_and_monitors_as_a_service_role(s, clean_queues):
    from pgmq import PGMQueue

    d = conninfo_to_dict(role_conninfo(s, "shared_queue", "svc_singularity"))
    sing = PGMQueue(host=d["host"], port=str(d["port"]), database="shared_queue", username=d["user"],
                    password=d["password"], init_extension=False, pool_size=1)
    d = conninfo_to_dict(role_conninfo(s, "shared_queue", "svc_nexus"))
    nexus = PGMQueue(host=d["host"], port=str(d["port"]), database="shared_queue", username=d["user"],
                     password=d["password"], init_extension=False, pool_size=1)
    try:
        # as the seeds' Elixir publisher sends it: a UUID id, `timestamp`, no instance or source of ours
        msg_id = sing.send("llm_requests", {"id": "6f1c2a9e-1d2b-4c8e-9a77-0f0e1d2c3b4a", "agent_id": "a1",
                                            "task_type": "chat", "messages": ["hi"], "timestamp": "2025-10-25T10:00:00Z"})
        got = nexus.read("llm_requests", vt=30)
        assert got.msg_id == msg_id and got.message["id"] == "6f1c2a9e-1d2b-4c8e-9a77-0f0e1d2c3b4a"
        assert got.message["source"] == "singularity" and got.message["created_at"] == "2025-10-25T10:00:00Z"
        assert nexus.archive("llm_requests", msg_id)
        by_queue = {m.queue_name: m for m in sing.metrics_all()}  # pgmq-js getAllMetrics is the same SQL
        assert "llm_requests" in by_queue and "dead_letters" in by_queue and "approval_responses" in by_queue
        assert by_queue["llm_requests"].total_messages >= 1
        with pytest.raises(Exception, match="permission denied"):  # counting is not reading
            sing.read("job_requests", vt=1)  # it sends jobs; only Genesis reads them
    finally:
        sing.pool.close()
        nexus.pool.close()


def test_shared_queue_disabled_runs_without_the_bus_and_loses_nothing(s, run_cli, clean_queues):
    off = {"SHARED_QUEUE_ENABLED": "false"}
    r = run_cli("daemon", "--only", "nexus,genesis", env=off, timeout=30)
    assert r.returncode == 0 and "SHARED_QUEUE_ENABLED=false" in r.stderr and "do not start" in r.stderr
    r = run_cli("send", "llm_requests", '{"agent_id": "a", "task_type": "chat", "messages": ["hi"]}', env=off)
    assert r.returncode != 0 and "SHARED_QUEUE_ENABLED=false" in r.stderr
    bus = Bus.for_role(replace(s, shared_queue_enabled=False), "svc_singularity", pool_size=1)
    try:
        with pytest.raises(BusError, match="SHARED_QUEUE_ENABLED=false"):
            bus.publish("llm_requests", {"agent_id": "a", "task_type": "chat", "messages": ["hi"]})
    finally:
        bus.close()
    # the instance's SQL: the outbox drain waits, keeps every row and records why
    migrate(replace(s, shared_queue_enabled=False), progress=lambda _m: None,
            only=[Target("singularity", "singularity"), Target("centralcloud", "centralcloud")])
    try:
        with connect(owner_conninfo(s, "singularity")) as own:
            mid = own.execute("SELECT outbox.enqueue('instance_heartbeat', '{\"type\": \"heartbeat\", \"instance_id\": "
                              "\"default\", \"service\": \"singularity\", \"at\": \"2026-01-01T00:00:00Z\"}') AS id"
                              ).fetchone()["id"]
            r = own.execute("SELECT outbox.drain() AS r").fetchone()["r"]
            assert r["sent"] == 0 and r["error"].startswith("waiting: the shared queue is turned off")
            row = own.execute("SELECT attempts, dead FROM outbox.messages WHERE id = %s", (mid,)).fetchone()
            assert row == {"attempts": 0, "dead": False}, "waiting is not an attempt"
            assert own.execute("SELECT error FROM outbox.drain_runs ORDER BY id DESC LIMIT 1").fetchone()["error"] \
                .startswith("waiting: ")
        out = run_cli("centralcloud", "run", "aggregate", check=True).stdout
        assert "SHARED_QUEUE_ENABLED=false" in out
    finally:
        migrate(s, progress=lambda _m: None, only=[Target("singularity", "singularity"),
                                                   Target("centralcloud", "centralcloud")])
    with connect(owner_conninfo(s, "singularity")) as own:
        r = own.execute("SELECT outbox.drain() AS r").fetchone()["r"]
        assert r["error"] is None and not own.execute("SELECT 1 FROM outbox.messages WHERE id = %s", (mid,)).fetchone()


def test_batch_size_and_max_attempts_take_effect(s, bus_for, clean_queues, sq_owner, monkeypatch):
    monkeypatch.setenv("SHARED_QUEUE_BATCH_SIZE", "3")
    st = Settings.from_env()
    assert st.batch_size == 3 and Bus.for_role(st, "svc_nexus", pool_size=1).batch_size == 3
    from orchestrator.nexus.worker import make

    w = make(st)
    try:
        assert w.batch == 3, "the nexus worker reads SHARED_QUEUE_BATCH_SIZE requests at once"
    finally:
        w.on_stop()
    migrate(replace(s, max_attempts=2), progress=lambda _m: None, only=[Target("shared_queue", "shared_queue")])
    try:
        assert sq_owner.execute("SELECT bus.setting('max_attempts') AS v").fetchone()["v"] == "2"
        sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
        sing.publish("llm_requests", {"agent_id": "a", "task_type": "chat", "messages": ["hi"]})
        [m] = nexus.read("llm_requests", 1)
        assert nexus.fail(m, "first") == "retry"
        sq_owner.execute("UPDATE pgmq.q_llm_requests SET vt = now() WHERE msg_id = %s", (m.msg_id,))
        [m] = nexus.read("llm_requests", 1)
        assert nexus.fail(m, "second") == "dead_lettered", "SHARED_QUEUE_MAX_ATTEMPTS=2 overrides the kind's 5"
    finally:
        migrate(s, progress=lambda _m: None, only=[Target("shared_queue", "shared_queue")])
    assert sq_owner.execute("SELECT bus.setting('max_attempts') AS v").fetchone()["v"] is None


def test_operator_commands_go_where_shared_queue_db_url_says(s, run_cli):
    here = conninfo_to_dict(role_conninfo(s, "shared_queue", "svc_nexus"))
    nowhere = make_conninfo(**{**here, "port": 1, "connect_timeout": 2})
    r = run_cli("queues", env={"SHARED_QUEUE_DB_URL": nowhere}, timeout=30)
    assert r.returncode != 0 and f"{here['host']}:1:" in r.stdout + r.stderr, "the operator dialled somewhere else"
    r = run_cli("queues", env={"SHARED_QUEUE_DB_URL": make_conninfo(**here)}, timeout=30)
    assert r.returncode == 0 and "llm_requests" in r.stdout


def test_nexus_sends_heartbeats(s, sq_owner, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_HEARTBEAT_S", "1")
    from orchestrator.nexus.worker import make

    since = sq_owner.execute("SELECT now() AS t").fetchone()["t"]
    w = make(Settings.from_env())
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and not sq_owner.execute(
                "SELECT 1 FROM pgmq.q_instance_heartbeat WHERE message->>'service' = 'nexus' AND enqueued_at >= %s",
                (since,)).fetchone():
            time.sleep(0.2)
    finally:
        w.on_stop()
    rows = sq_owner.execute("SELECT message FROM pgmq.q_instance_heartbeat WHERE message->>'service' = 'nexus' "
                            "AND enqueued_at >= %s ORDER BY msg_id", (since,)).fetchall()
    assert rows and rows[-1]["message"]["stats"]["state"] == "stopped" and "llm_requests_handled" in rows[0]["message"]["stats"]
    sq_owner.execute("DELETE FROM pgmq.q_instance_heartbeat WHERE message->>'service' = 'nexus' AND enqueued_at >= %s",
                     (since,))
