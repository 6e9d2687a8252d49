"""The review's attacks on the bus and its consumers, replayed against the real workers (DESIGN.md 8b):
an approved request's id reused for another diff, a job id reused to take another job's output,
forged dead letters and their replay, poison messages (nested too deep to decode) in a batch, and a
service speaking for another. Each of these passed on the main of 2026-12-05."""

from __future__ import annotations

import os
import time

import psycopg
import pytest
from genesis_tools import forget_genesis_heartbeats
from psycopg.types.json import Jsonb

from orchestrator.core.messages import ValidationError, ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.infra.db import connect, owner_conninfo


@pytest.fixture
def hitl(s, clean_queues):
    """The hitl worker's logic (no page, no thread): the test drives its passes."""
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("TRUNCATE nexus.hitl_decisions, nexus.hitl_items")
    from orchestrator.nexus.hitl_worker import build

    h, _web, worker = build(s, host="127.0.0.1", port=0)
    yield h
    worker.on_stop()


def responses(sq, queue: str, rid: str) -> list[dict]:
    rows = sq.execute(f"SELECT message FROM pgmq.q_{queue} WHERE message->>'request_id' = %s "
                      f"UNION ALL SELECT message FROM pgmq.a_{queue} WHERE message->>'request_id' = %s", (rid, rid))
    return [r["message"] for r in rows]


def test_an_approved_id_reused_for_another_diff_is_refused_not_approved(hitl, bus_for, sq_owner):
    sing = bus_for("svc_singularity")
    x = ulid()
    sing.publish("approval_requests", {"id": x, "agent_id": "a1", "file_path": "README.md", "diff": "+fixed typo"})
    hitl.tick()
    assert hitl.decide(x, "alice", approved=True)["status"] == "decided"
    [first] = responses(sq_owner, "approval_responses", x)
    assert first["approved"] is True and first["decided_by"] == "alice" and len(first["request_sha256"]) == 64

    sing.publish("approval_requests", {"id": x, "agent_id": "a1", "file_path": "/etc/sudoers",
                                       "diff": "+ALL ALL=(ALL) NOPASSWD: ALL"})
    hitl.tick()
    time.sleep(0.2)
    hitl.tick()
    got = responses(sq_owner, "approval_responses", x)
    assert len(got) == 2, got
    second = next(r for r in got if r is not first and r != first)
    assert second["approved"] is False and second["decided_by"] == "nexus:conflict"
    assert "already used for a different approval" in second["error"] and "new id" in second["error"]
    assert second["request_sha256"] != first["request_sha256"]
    assert sum(r["approved"] for r in got) == 1, "a second approval was published"
    assert all(i["request_id"] != x for i in hitl.pending("approval")), "the sudoers diff must not replace the item"


@pytest.fixture
def genesis(s):
    from datetime import UTC, datetime

    since = datetime.now(UTC)
    os.environ["GENESIS_CONCURRENCY"] = "2"
    from orchestrator.genesis.worker import make

    w = make(s)
    sup = Supervisor([w], grace_s=5)
    sup.start()
    yield w
    sup.request_stop()
    sup.shutdown()
    forget_genesis_heartbeats(s, since)


def test_a_job_id_reused_never_gets_the_first_jobs_output(genesis, bus_for, clean_queues, sq_owner):
    sing = bus_for("svc_singularity")
    x = ulid()
    sing.publish("job_requests", {"id": x, "code": "print('SECRET-A')", "language": "python", "mode": "run"})
    end = time.monotonic() + 30
    while not responses(sq_owner, "job_results", x) and time.monotonic() < end:
        time.sleep(0.1)
    [a] = responses(sq_owner, "job_results", x)
    assert a["stdout"] == "SECRET-A\n"

    sing.publish("job_requests", {"id": x, "code": "echo B", "language": "bash", "mode": "run"})
    while len(responses(sq_owner, "job_results", x)) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    got = responses(sq_owner, "job_results", x)
    assert len(got) == 2
    b = next(r for r in got if r != a)
    assert "SECRET-A" not in (b.get("stdout") or "") + (b.get("output") or "")
    assert "already used for a different job" in b["error"] and b["exit_code"] is None
    assert b["request_sha256"] != a["request_sha256"]


def test_services_cannot_forge_dead_letters_and_hand_made_ones_are_not_replayed(bus_for, clean_queues, sq_owner,
                                                                              run_cli):
    forged = {"queue": "job_requests", "message": {"code": "echo pwned", "language": "bash", "mode": "run"},
              "error": "x", "attempts": 1}
    for role in ("svc_nexus", "svc_genesis", "svc_singularity", "svc_centralcloud"):
        with pytest.raises(PermissionError):
            bus_for(role).publish("dead_letters", forged)
    approval = {"queue": "approval_responses", "error": "x", "attempts": 1,
                "message": {"request_id": "r", "approved": True, "decided_by": "alice"}}
    dl = sq_owner.execute("SELECT pgmq.send('dead_letters', %s) AS id", (Jsonb(approval),)).fetchone()["id"]
    r = run_cli("dlq", "replay", str(dl))
    assert r.returncode != 0
    assert "not written by the bus's dead-letter path" in r.stdout + r.stderr
    assert not sq_owner.execute("SELECT 1 FROM pgmq.q_approval_responses").fetchall(), "the forged approval went out"


def test_a_message_too_deep_to_decode_is_dead_lettered_and_the_rest_of_its_batch_served(hitl, bus_for, sq_owner):
    sing = bus_for("svc_singularity")
    sing.publish("approval_requests", {"agent_id": "a1", "file_path": "x", "diff": "+1", "reason": "fine"})
    with pytest.raises(ValidationError, match="nested 101 levels deep, over the limit of 64"):
        sing.publish("approval_requests", {"agent_id": "a1", "file_path": "y", "diff": "+2", "meta": _nested(100)})
    # an operator raised the limit (or the message predates it): 3,000 levels, which no consumer can decode
    sq_owner.execute("SELECT bus.set_setting('max_json_depth', '10000')")
    try:
        deep = sq_owner.execute(
            "SELECT pgmq.send('approval_requests', (%s || repeat('{\"a\":', 3000) || '1' || repeat('}', 3000) || '}')::jsonb,"
            " '{\"sender\": \"svc_singularity\"}'::jsonb) AS id",
            ('{"agent_id": "a1", "file_path": "y", "diff": "+2", "meta": ',)).fetchone()["id"]
    finally:
        sq_owner.execute("SELECT bus.set_setting('max_json_depth', '64')")
    sing.publish("approval_requests", {"agent_id": "a1", "file_path": "z", "diff": "+3"})
    hitl.tick()
    assert sorted(i["payload"]["file_path"] for i in hitl.pending("approval")) == ["x", "z"]
    [dead] = sq_owner.execute("SELECT message->>'error' AS e, message->>'sender' AS s FROM pgmq.q_dead_letters "
                              "WHERE (message->>'msg_id')::bigint = %s", (deep,)).fetchall()
    assert dead["e"].startswith("cannot be decoded by the consumer: RecursionError") and dead["s"] == "svc_singularity"


def _nested(n: int) -> dict:
    d: dict = {"a": 1}
    for _ in range(n - 1):
        d = {"a": d}
    return d


def test_a_service_cannot_speak_for_another_or_route_replies_elsewhere(bus_for, clean_queues):
    with pytest.raises(PermissionError, match='may not send as service "nexus"'):
        bus_for("svc_genesis").publish("instance_heartbeat", {"instance_id": "h", "service": "nexus",
                                                              "at": "2026-01-01T00:00:00Z"})
    with pytest.raises(PermissionError, match='may not send as instance "other"'):
        bus_for("svc_singularity").publish("pattern_messages", {"instance_id": "other", "patterns": []})
    sing = bus_for("svc_singularity")
    sing.publish("pattern_messages", {"source": "centralcloud", "patterns": []})
    nexus = bus_for("svc_nexus")
    with pytest.raises((PermissionError, psycopg.Error)):
        nexus.read("pattern_messages", 1)  # not its queue: the flow table holds
