"""Wake-ups and batch answers against the real server.

Wake-ups: a foreign pgmq.send wakes LISTEN clients inside its commit (the bus_wake statement trigger, one
NOTIFY per statement); the bus's own sessions (bus.wake = after_commit) do not, and the bus wakes after its
commit instead; a send inside a caller's transaction wakes at that commit. Batches: the nexus worker answers a
read in one admit, one settle and one reply call, each request exactly once, a stale delivery not at all, a
result the bus refuses dead-lettered, and a failed admission falls back to one message at a time.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from orchestrator.core.bus import Bus, SelfSettlingBus, defer_wakes
from orchestrator.core.messages import ulid
from orchestrator.infra.db import connect, make_pool, owner_conninfo, role_conninfo
from orchestrator.nexus.router import Router, fast_commit
from orchestrator.nexus.worker import BatchAnswerer, make_handler

LLM = {"agent_id": "wb", "task_type": "wb-offline", "messages": [{"role": "user", "content": "hi"}]}


class Listener:
    """A plain LISTEN connection on a queue's insert channel, counting notifications."""

    def __init__(self, s, queue: str):
        self.conn = psycopg.connect(owner_conninfo(s, "shared_queue"), autocommit=True)
        self.conn.execute(f'LISTEN "pgmq.q_{queue}.INSERT"')

    def got(self, within: float, stop_after: int = 100) -> int:
        """Notifications received within WITHIN seconds (returning early once STOP_AFTER have come)."""
        return sum(1 for _ in self.conn.notifies(timeout=within, stop_after=stop_after))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def listener(s):
    made = []

    def make(queue: str) -> Listener:
        made.append(Listener(s, queue))
        return made[-1]

    yield make
    for x in made:
        x.close()


def test_a_foreign_send_wakes_listeners_once_per_statement(s, clean_queues, listener):
    lis = listener("llm_requests")
    with connect(role_conninfo(s, "shared_queue", "svc_singularity")) as c:
        c.execute("SELECT pgmq.send_batch('llm_requests', %s::jsonb[])",
                  ([psycopg.types.json.Jsonb(LLM)] * 20,))
    assert lis.got(2.0) == 1, "a 20-message send_batch is one statement: one wake-up"


def test_the_bus_session_does_not_notify_in_its_commit_and_wakes_after_it(s, clean_queues, listener):
    lis = listener("llm_requests")
    with connect(defer_wakes(role_conninfo(s, "shared_queue", "svc_singularity"))) as c:
        c.execute("SELECT pgmq.send('llm_requests', %s)", (psycopg.types.json.Jsonb(LLM),))
        assert lis.got(0.5) == 0, "a session with bus.wake = after_commit notified inside its commit"
        c.execute("SELECT bus.wake(ARRAY['llm_requests'])")
    assert lis.got(2.0) == 1, "bus.wake() after the commit woke the listener"
    bus = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="wb")
    try:
        t0 = time.monotonic()
        bus.publish("llm_requests", LLM)
        assert lis.got(2.0, stop_after=1) == 1 and time.monotonic() - t0 < 1, "Bus.publish woke the listener"
    finally:
        bus.close()


def test_a_send_inside_the_callers_transaction_wakes_at_its_commit(s, clean_queues, listener):
    lis = listener("llm_requests")
    bus = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="wb")
    try:
        def work(c):
            with c.transaction():
                bus.publish("llm_requests", LLM, conn=c)
                assert lis.got(0.3) == 0, "woken before the commit: a consumer would find nothing"
        bus.run(work)  # a connection of the bus's own pool: bus.wake = after_commit
        assert lis.got(2.0) == 1, "the caller's commit woke the listener"
    finally:
        bus.close()


def test_a_throttle_above_zero_uses_pgmqs_trigger_and_still_wakes(s, clean_queues, listener, sq_owner):
    sq_owner.execute("SELECT bus._set_wake('llm_requests', 100)")
    try:
        lis = listener("llm_requests")
        with connect(role_conninfo(s, "shared_queue", "svc_singularity")) as c:
            c.execute("SELECT pgmq.send('llm_requests', %s)", (psycopg.types.json.Jsonb(LLM),))
        assert lis.got(2.0) == 1
    finally:
        sq_owner.execute("SELECT bus._set_wake('llm_requests', 0)")


@pytest.fixture
def answerer(s):
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("SELECT nexus.set_route('*', ARRAY['offline'])")
        c.execute("DELETE FROM nexus.llm_calls WHERE agent_id = 'wb'")
    bus = SelfSettlingBus(role_conninfo(s, "shared_queue", "svc_nexus"), source="nexus")
    pool = make_pool(fast_commit(role_conninfo(s, "nexus", "svc_nexus")), max_size=2)
    router = Router(pool)
    counter = {"n": 0}
    single = make_handler(bus, router)
    yield bus, router, BatchAnswerer(bus, router, 15.0, single, counter), counter
    router.close()
    pool.close()
    bus.close()


def _results(sq_owner, ids) -> dict:
    rows = sq_owner.execute("SELECT message FROM pgmq.q_llm_results WHERE message->>'request_id' = ANY(%s)",
                            (list(ids),)).fetchall()
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["message"]["request_id"], []).append(r["message"])
    return out


def test_a_batch_is_answered_once_each_with_stale_and_bad_ones_handled(s, clean_queues, sq_owner, bus_for,
                                                                        answerer):
    bus, _router, answer, counter = answerer
    sing = bus_for("svc_singularity")
    ids = [ulid() for _ in range(8)]
    bodies = [{**LLM, "id": i, "reply_to": "llm_results"} for i in ids]
    bodies[3]["max_tokens"] = 0  # refused before admission: an error result, still an answer
    sing.publish_batch("llm_requests", bodies)
    msgs = bus.read("llm_requests", 10)
    assert len(msgs) == 8
    # another worker took msgs[5] after its lease ran out: this delivery is stale
    sq_owner.execute("UPDATE pgmq.q_llm_requests SET read_ct = read_ct + 1 WHERE msg_id = %s", (msgs[5].msg_id,))
    done = answer(msgs, threading.Event())
    assert len(done) == 8
    got = _results(sq_owner, ids)
    assert set(got) == set(ids) - {ids[5]}, "every current delivery answered, the stale one not"
    assert all(len(v) == 1 for v in got.values()), "each exactly once"
    assert "max_tokens" in got[ids[3]][0]["error"]
    assert got[ids[0]][0]["model"] == "offline" and got[ids[0]][0]["request_msg_id"] == msgs[0].msg_id
    assert counter["n"] == 7
    left = sq_owner.execute("SELECT msg_id FROM pgmq.q_llm_requests").fetchall()
    assert [r["msg_id"] for r in left] == [msgs[5].msg_id], "answered requests are archived, the stale one stays"
    with connect(owner_conninfo(s, "nexus")) as c:
        n = c.execute("SELECT count(*) AS n FROM nexus.llm_calls WHERE request_id = ANY(%s) AND status = 'ok'",
                      (ids,)).fetchone()["n"]
    assert n == 7, "each admitted request's attempt is logged once (settle_many)"


def test_a_result_the_bus_refuses_is_dead_lettered_and_the_rest_answered(s, clean_queues, sq_owner, bus_for,
                                                                         answerer):
    bus, _router, answer, _counter = answerer
    sing = bus_for("svc_singularity")
    ids = [ulid() for _ in range(3)]
    sing.publish_batch("llm_requests", [{**LLM, "id": i, "reply_to": "llm_results"} for i in ids])
    msgs = bus.read("llm_requests", 10)
    # the reply queue vanished from the rules between the send and the answer (as a dropped instance's would)
    bad = msgs[1]
    object.__setattr__(bad, "body", {**bad.body, "reply_to": "no_such_results"})
    answer(msgs, threading.Event())
    got = _results(sq_owner, ids)
    assert set(got) == {ids[0], ids[2]}
    dead = sq_owner.execute("SELECT message FROM pgmq.q_dead_letters WHERE (message->>'msg_id')::bigint = %s",
                            (bad.msg_id,)).fetchall()
    assert dead and "cannot answer on no_such_results" in dead[0]["message"]["error"], dead


def test_a_failed_batch_admission_falls_back_to_one_at_a_time(s, clean_queues, sq_owner, bus_for, answerer,
                                                              monkeypatch):
    bus, router, answer, counter = answerer
    sing = bus_for("svc_singularity")
    ids = [ulid() for _ in range(3)]
    sing.publish_batch("llm_requests", [{**LLM, "id": i, "reply_to": "llm_results"} for i in ids])
    msgs = bus.read("llm_requests", 10)
    one_by_one = router.admit

    def batch_broken(calls):
        if len(calls) > 1:
            raise RuntimeError("admit_many failed for the batch")
        return one_by_one(calls)

    monkeypatch.setattr(router, "admit", batch_broken)
    assert len(answer(msgs, threading.Event())) == 3
    got = _results(sq_owner, ids)
    assert set(got) == set(ids) and all(len(v) == 1 for v in got.values()), got
    assert counter["n"] == 0, "answered by the one-at-a-time handler, which counts its own"
    assert not sq_owner.execute("SELECT 1 FROM pgmq.q_llm_requests").fetchall()


def test_shutdown_mid_batch_hands_back_what_has_not_started(s, clean_queues, sq_owner, bus_for, answerer):
    bus, _router, answer, _counter = answerer
    sing = bus_for("svc_singularity")
    ids = [ulid() for _ in range(4)]
    sing.publish_batch("llm_requests", [{**LLM, "id": i, "reply_to": "llm_results"} for i in ids])
    msgs = bus.read("llm_requests", 10)
    stop = threading.Event()
    stop.set()
    assert answer(msgs, stop) == []
    rows = sq_owner.execute("SELECT vt <= now() AS visible FROM pgmq.q_llm_requests").fetchall()
    assert len(rows) == 4 and all(r["visible"] for r in rows), "released for immediate redelivery"
