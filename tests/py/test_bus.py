"""The bus against the real cluster: round trip, request/reply, retries, DLQ, redelivery, fencing, wake-ups."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from helpers import wait_until
from orchestrator.core.bus import Bus, Reject
from orchestrator.core.messages import ValidationError

LLM = {"agent_id": "agent-1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}


def test_round_trip_stamps_envelope_and_archives(bus_for, clean_queues, sq_owner):
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    msg_id = sing.publish_llm_request(LLM)
    [m] = nexus.read("llm_requests", 10)
    assert m.msg_id == msg_id and m.read_ct == 1
    assert m.body["agent_id"] == "agent-1" and m.body["type"] == "llm_request"
    assert len(m.body["id"]) == 26 and m.body["source"] == "singularity" and m.body["created_at"]
    assert m.sender == "svc_singularity" and len(m.content_sha256) == 64  # the server's record of who sent it
    assert nexus.ack(m) == "acked"
    row = sq_owner.execute("SELECT message FROM pgmq.a_llm_requests WHERE msg_id = %s", (msg_id,)).fetchone()
    assert row["message"]["id"] == m.body["id"]
    assert nexus.read("llm_requests") == []


def test_python_and_sql_validation_agree(bus_for, clean_queues, sq_owner):
    """The client refuses what SQL refuses, with the same words, and SQL refuses it on its own too."""
    sing = bus_for("svc_singularity")
    cases = [
        ({"agent_id": "a", "task_type": "t"}, 'required field "messages" is missing'),
        ({**LLM, "agent_id": 7}, 'field "agent_id" must be a JSON string'),
        ({**LLM, "messages": []}, 'field "messages" must not be empty'),
        ({**LLM, "id": ""}, 'field "id" must be a string of 1 to 128 printable characters'),
        ({**LLM, "reply_to": "job_results"}, "is not a llm_results queue"),
    ]
    for body, words in cases:
        with pytest.raises(ValidationError, match=words):
            sing.publish("llm_requests", body)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=words):
            sq_owner.execute("SELECT pgmq.send('llm_requests', %s::jsonb)", (psycopg.types.json.Jsonb(body),))
    with pytest.raises(ValidationError, match="over the limit"):
        sing.publish("llm_requests", {**LLM, "pad": "x" * 1_100_000})
    with pytest.raises(ValidationError, match='unknown queue "nope'):
        sing.publish("nope", LLM)
    with pytest.raises(ValidationError, match="must be a JSON object"):
        sing.publish("llm_requests", ["not", "an", "object"])
    assert sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests").fetchone()["n"] == 0


def test_forbidden_send_is_a_permission_error(bus_for, clean_queues):
    with pytest.raises(PermissionError, match="permission denied"):
        bus_for("svc_genesis").publish("llm_requests", LLM)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        bus_for("svc_singularity").read("llm_requests")


def test_request_reply_with_instant_responder(bus_for, clean_queues):
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    stop = threading.Event()

    def answer(m):
        nexus.reply_and_ack(m, m.body.get("reply_to", "llm_results"),
                            {"request_id": m.body["id"], "result": "pong", "model": "test"})

    t = threading.Thread(target=lambda: nexus.consume("llm_requests", answer, stop=stop, batch_size=1), daemon=True)
    t.start()
    try:
        reply = sing.request("llm_requests", LLM, reply_to="llm_results", timeout=10)
        assert reply["result"] == "pong"
        # two concurrent requesters on one reply queue each get their own reply
        out: dict[int, dict] = {}
        ths = [threading.Thread(target=lambda i=i: out.__setitem__(i, sing.request(
            "llm_requests", {**LLM, "agent_id": f"a{i}"}, reply_to="llm_results", timeout=10))) for i in range(4)]
        for x in ths:
            x.start()
        for x in ths:
            x.join()
        assert len({r["request_id"] for r in out.values()}) == 4
    finally:
        stop.set()
        t.join(5)


def test_request_times_out_with_a_clear_error(bus_for, clean_queues):
    with pytest.raises(TimeoutError, match="no reply on llm_results"):
        bus_for("svc_singularity", poll_ms=100).request("llm_requests", LLM, reply_to="llm_results", timeout=0.5)


def test_fail_backs_off_then_dead_letters(bus_for, clean_queues, sq_owner):
    sing, gen = bus_for("svc_singularity"), bus_for("svc_genesis")
    job = {"code": "print(1)", "language": "python", "mode": "run"}
    msg_id = sing.publish("job_requests", job)
    max_attempts = sq_owner.execute("SELECT max_attempts FROM bus.queue_kinds WHERE kind = 'job_requests'").fetchone()[
        "max_attempts"]
    for attempt in range(1, max_attempts + 1):
        sq_owner.execute("UPDATE pgmq.q_job_requests SET vt = now() WHERE msg_id = %s", (msg_id,))
        [m] = gen.read("job_requests", 1)
        assert m.read_ct == attempt
        status = gen.fail(m, f"boom {attempt}", backoff_s=5)
        if attempt < max_attempts:
            assert status == "retry"
            row = sq_owner.execute("SELECT vt > now() + interval '2 s' AS later, headers FROM pgmq.q_job_requests "
                                   "WHERE msg_id = %s", (msg_id,)).fetchone()
            assert row["later"] and row["headers"]["last_error"] == f"boom {attempt}"
            assert gen.read("job_requests", 1) == []  # hidden during backoff
        else:
            assert status == "dead_lettered"
    assert sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_job_requests").fetchone()["n"] == 0
    [dl] = sq_owner.execute("SELECT message FROM pgmq.q_dead_letters").fetchall()
    assert dl["message"]["queue"] == "job_requests" and dl["message"]["attempts"] == max_attempts
    assert "boom 3" in dl["message"]["error"] and dl["message"]["message"]["code"] == "print(1)"


def test_reject_dead_letters_at_once_with_reason(bus_for, clean_queues, sq_owner):
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    sing.publish_llm_request(LLM)
    [m] = nexus.read("llm_requests")

    def handler(_m):
        raise Reject("model name is not routable")

    nexus.handle(m, handler)
    [dl] = sq_owner.execute("SELECT message FROM pgmq.q_dead_letters").fetchall()
    assert "model name is not routable" in dl["message"]["error"] and dl["message"]["attempts"] == 1


def test_unacked_message_comes_back_after_visibility_timeout(bus_for, clean_queues):
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    msg_id = sing.publish_llm_request(LLM)
    [m1] = nexus.read("llm_requests", 1, vt_s=1)  # a consumer that then "crashes" without ack
    t1 = time.monotonic()
    assert nexus.read("llm_requests", 1) == []
    [m2] = wait_until(lambda: nexus.read("llm_requests", 1), 10, "the message to come back")
    assert time.monotonic() - t1 >= 0.8, "it came back before its visibility timeout"
    assert m2.msg_id == msg_id and m2.read_ct == m1.read_ct + 1


def test_late_ack_is_fenced(bus_for, clean_queues, sq_owner):
    """A worker whose lease ran out cannot archive the message another worker now holds."""
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    sing.publish_llm_request(LLM)
    [slow] = nexus.read("llm_requests", 1, vt_s=1)
    [fast] = wait_until(lambda: nexus.read("llm_requests", 1, vt_s=30), 10, "slow's lease to run out")
    assert nexus.ack(slow) == "stale"
    assert nexus.reply_and_ack(slow, "llm_results", {"request_id": slow.body["id"], "result": "late"}) == "stale"
    assert sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_llm_results").fetchone()["n"] == 0
    assert nexus.extend(slow, 60) == "stale"
    assert nexus.ack(fast) == "acked"
    assert nexus.ack(fast) == "gone"


def test_batch_ack_archives_only_current_deliveries(bus_for, clean_queues):
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    sing.publish_batch("llm_requests", [{**LLM, "agent_id": f"a{i}"} for i in range(5)])
    msgs = nexus.read("llm_requests", 5)
    assert len(msgs) == 5
    stale = msgs[0].__class__(**{**msgs[0].__dict__, "read_ct": 99})
    acked = nexus.ack_many([stale, *msgs[1:]])
    assert sorted(acked) == sorted(m.msg_id for m in msgs[1:])


def test_release_makes_message_visible_now(bus_for, clean_queues):
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus")
    sing.publish_llm_request(LLM)
    [m] = nexus.read("llm_requests", 1, vt_s=300)
    assert nexus.release(m) == "ok"
    [again] = nexus.read("llm_requests", 1)
    assert again.msg_id == m.msg_id


def test_listen_wakes_consumer_in_milliseconds(bus_for, clean_queues):
    """With a 10 s fallback poll, a message must still be picked up almost at once (LISTEN/NOTIFY)."""
    sing, nexus = bus_for("svc_singularity"), bus_for("svc_nexus", poll_ms=10_000)
    got: list[float] = []
    stop = threading.Event()

    def handler(m):
        got.append(time.monotonic())

    nexus.notifier.subscribe("llm_requests")  # returns once LISTEN is in effect
    t = threading.Thread(target=lambda: nexus.consume("llm_requests", handler, stop=stop), daemon=True)
    t.start()
    time.sleep(0.5)  # consumer is idle, waiting on the notification
    sent = time.monotonic()
    sing.publish_llm_request(LLM)
    deadline = time.monotonic() + 8
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(12)
    assert got, "message not consumed"
    # well under the 10 s poll: the wake-up came from LISTEN (a loaded machine can take a while)
    assert got[0] - sent < 5.0, f"took {got[0] - sent:.3f}s: the wake-up did not come from LISTEN"


def test_bus_survives_closed_connections(s, bus_for, clean_queues, admin):
    """Connections killed under the pool are replaced: the pool checks each one before use."""
    sing = bus_for("svc_singularity")
    sing.publish_llm_request(LLM)
    admin("postgres").execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE usename = 'svc_singularity' AND pid <> pg_backend_pid()")
    assert sing.publish_llm_request(LLM) > 0


def test_heartbeat_message_shape(bus_for, clean_queues, sq_owner):
    from orchestrator.core.heartbeat import beat

    beat(bus_for("svc_genesis"), "default", "genesis", {"extra": 1})
    [r] = sq_owner.execute("SELECT message FROM pgmq.q_instance_heartbeat").fetchall()
    assert r["message"]["service"] == "genesis" and r["message"]["stats"]["rss_mb"] > 0


def test_bus_class_has_no_per_queue_copies():
    """Aliases are one-liners over publish/read; behaviour lives in one place."""
    import inspect

    for name in ("publish_llm_request", "publish_job_request", "read_llm_results", "read_job_results"):
        assert len(inspect.getsource(getattr(Bus, name)).strip().splitlines()) == 2
