"""The bridge in JetStream mode on a real nats-server: a stored message is acked only after its pgmq
commit, so killing nats-server (SIGKILL) while messages flow loses nothing and doubles nothing, and while
PostgreSQL is away nothing is acked; results go to the subject in the Reply-To header; phase 2 drains
only what the stream stored before the cutover."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import nats
import pytest
from chaos_tools import CuttableProxy
from nats.js.api import StorageType, StreamConfig
from nats_tools import NatsServer, running_bridge
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from helpers import wait_until
from orchestrator.core.messages import ulid
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo
from orchestrator.nats.bridge import stream_backlog
from orchestrator.nats.settings import NatsSettings

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


@pytest.fixture
def js_server(tmp_path):
    srv = NatsServer(tmp_path / "js", jetstream=True)
    srv.store.mkdir()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh(s, clean_queues):
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("DELETE FROM nats.requests")
        c.execute("SELECT nats.set_phase(1, 'test')")


def env(srv) -> dict:
    return {"NATS_URL": srv.url, "NATS_MODE": "jetstream", "NATS_STREAM": "AGENT_REQUESTS"}


def llm(rid: str, text: str = "stored") -> dict:
    return {"id": rid, "agent_id": "js-agent", "task_type": "nats-js", "messages": [{"role": "user", "content": text}]}


async def publish(url: str, ids: list[str], on_sent=None, headers=None) -> int:
    """An agent on JetStream: js.publish each request until the stream acks it (retrying through outages);
    returns how many publishes had to be retried."""
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=1.0)
    retries = 0
    for i, rid in enumerate(ids):
        while True:
            try:
                await js.publish("llm_requests", json.dumps(llm(rid)).encode(),
                                 headers={"Nats-Msg-Id": rid, **(headers or {})})
                break
            except Exception:  # noqa: BLE001 - no ack: the server is away; send again (Nats-Msg-Id dedupes)
                retries += 1
                await asyncio.sleep(0.1)
        if on_sent:
            on_sent(i)
    await nc.close()
    return retries


def bus_counts(s, ids: list[str]) -> dict[str, int]:
    """How many times each id is in pgmq (queue and archive) and in the ledger."""
    with connect(owner_conninfo(s, "shared_queue")) as c:  # one statement: one snapshot of both
        return c.execute("""
            SELECT count(DISTINCT m.message->>'id')::int AS distinct, count(*)::int AS total,
                   (SELECT count(*)::int FROM nats.requests WHERE request_key = ANY(%(ids)s) AND status = 'enqueued')
                       AS ledger
              FROM (SELECT message FROM pgmq.q_llm_requests UNION ALL SELECT message FROM pgmq.a_llm_requests) m
             WHERE m.message->>'id' = ANY(%(ids)s)""", {"ids": ids}).fetchone()


def test_nats_server_killed_and_restarted_while_messages_flow_loses_nothing(s, js_server, fresh):
    ids = [ulid() for _ in range(300)]
    with running_bridge(s, env(js_server), ack_wait_s=3) as bridge:
        restarted = threading.Event()

        def chaos(i: int) -> None:
            if i in (100, 200):  # twice, SIGKILL while the bridge drains; back after a second
                js_server.kill()
                threading.Timer(1.0, lambda: (js_server.start(), restarted.set())).start()

        retries = asyncio.run(publish(js_server.url, ids, on_sent=chaos))
        assert restarted.wait(15)
        got = wait_until(lambda: (c := bus_counts(s, ids))["ledger"] == len(ids) and c, 90,
                         "every stored request in pgmq")
        left = wait_until(lambda: (b := asyncio.run(stream_backlog(NatsSettings.from_env(env(js_server)))))
                          .get("pending") == 0 and b.get("unacked") == 0 and b, 30, "the stream drained")
        assert bridge.counts["taken"] >= len(ids)
    assert got == {"distinct": len(ids), "total": len(ids), "ledger": len(ids)}, got  # nothing lost, nothing doubled
    assert retries > 0, "the outage was seen by the publisher"
    assert left["messages"] >= len(ids)


def test_postgres_away_nothing_is_acked_until_enqueued(s, js_server, fresh):
    d = conninfo_to_dict(role_conninfo(s, "shared_queue", "svc_nats"))
    proxy = CuttableProxy(int(d["port"]))
    d["port"] = proxy.port
    ids = [ulid() for _ in range(20)]
    try:
        with running_bridge(s, env(js_server), conninfo=make_conninfo(**d), ack_wait_s=2):
            proxy.cut()
            asyncio.run(publish(js_server.url, ids))
            time.sleep(3)
            assert bus_counts(s, ids)["ledger"] == 0
            b = asyncio.run(stream_backlog(NatsSettings.from_env(env(js_server))))
            assert b["pending"] + b["unacked"] == len(ids), b  # none acked while PostgreSQL is away
            proxy.heal()
            got = wait_until(lambda: (c := bus_counts(s, ids))["ledger"] == len(ids) and c, 60, "all enqueued after")
    finally:
        proxy.close()
    assert got == {"distinct": 20, "total": 20, "ledger": 20}


def test_results_go_to_the_reply_to_header_and_phase_2_drains_only_what_was_stored(s, js_server, fresh):
    from orchestrator.core.supervisor import Supervisor
    from orchestrator.nexus.worker import make

    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("SELECT nexus.set_route('*', ARRAY['offline'])")

    async def agent(ids_before: list[str], ids_after: list[str], cut) -> list[dict]:
        nc = await nats.connect(js_server.url)
        got: list[dict] = []

        async def on_reply(m):
            got.append(json.loads(m.data))
        await nc.subscribe("agent.js.replies", cb=on_reply)
        subjects = list(NatsSettings.from_env(env(js_server)).subjects.values())  # as the bridge will make it
        await nc.jetstream().add_stream(StreamConfig(name="AGENT_REQUESTS", subjects=subjects,
                                                     storage=StorageType.FILE))
        await publish(js_server.url, ids_before, headers={"Reply-To": "agent.js.replies"})
        cut()
        await publish(js_server.url, ids_after, headers={"Reply-To": "agent.js.replies"})
        end = time.monotonic() + 30
        while len(got) < len(ids_before) + len(ids_after) and time.monotonic() < end:
            await asyncio.sleep(0.1)
        await nc.close()
        return got

    before, after = [ulid() for _ in range(5)], [ulid() for _ in range(3)]
    sup = Supervisor([make(s)], grace_s=5)
    sup.start()
    try:
        # the bridge starts only after the cutover: the stream still holds the earlier requests
        def cutover():
            with connect(owner_conninfo(s, "shared_queue")) as c:
                c.execute("SELECT nats.set_phase(2, 'test cutover')")
            time.sleep(0.05)

        holder: dict = {}
        t = threading.Thread(target=lambda: holder.update(got=asyncio.run(agent(before, after, cutover))))
        t.start()
        time.sleep(2.0)
        with running_bridge(s, env(js_server)) as bridge:
            t.join(40)
            assert bridge.phase == 2
    finally:
        sup.request_stop()
        sup.shutdown()
    got = holder["got"]
    answers = {g["request_id"]: g for g in got}
    assert all(answers[i]["model"] == "offline" for i in before), got          # drained and answered
    assert all("phase 2" in answers[i]["error"] for i in after), got          # stored after the cutover: told why
    assert bus_counts(s, after)["total"] == 0
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("SELECT nats.set_phase(1)")


def test_the_bridge_killed_between_commit_and_ack_loses_and_doubles_nothing(s, js_server, fresh, tmp_path):
    """`orchestrator daemon --only nats` SIGKILLed while it drains: what it committed but had not acked
    comes again after ack_wait and is a duplicate in the ledger; a second daemon finishes the rest."""
    import os
    import signal
    import subprocess
    import sys

    from nats.js.api import AckPolicy, ConsumerConfig

    from helpers import ROOT
    from orchestrator.nats.bridge import DURABLE

    async def prepare():  # the stream and the bridge's consumer, with a short ack_wait for the test
        nc = await nats.connect(js_server.url)
        js = nc.jetstream()
        subjects = list(NatsSettings.from_env(env(js_server)).subjects.values())
        await js.add_stream(StreamConfig(name="AGENT_REQUESTS", subjects=subjects, storage=StorageType.FILE))
        await js.add_consumer("AGENT_REQUESTS", ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT,
                                                               ack_wait=2, max_deliver=-1))
        await nc.close()
    asyncio.run(prepare())
    ids = [ulid() for _ in range(400)]
    asyncio.run(publish(js_server.url, ids))

    def daemon(n: int) -> subprocess.Popen:
        fh = open(tmp_path / f"daemon{n}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "nats"], cwd=ROOT,
                                env={**os.environ, **env(js_server)}, stdout=fh, stderr=fh)

    first = daemon(1)
    try:
        wait_until(lambda: bus_counts(s, ids)["ledger"] >= 60, 60, "the first daemon to be draining")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    at_kill = bus_counts(s, ids)["ledger"]
    assert at_kill < len(ids), "killed before it finished"
    second = daemon(2)
    try:
        got = wait_until(lambda: (c := bus_counts(s, ids))["ledger"] == len(ids) and c, 90, "the second to finish")
        wait_until(lambda: asyncio.run(stream_backlog(NatsSettings.from_env(env(js_server))))["unacked"] == 0, 30,
                   "every message acked")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert got == {"distinct": len(ids), "total": len(ids), "ledger": len(ids)}, got
