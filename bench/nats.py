"""Requests bridged from NATS vs sent to pgmq directly, in the same run, on a real nats-server: requests/s
answered (the same echo responder on llm_requests answers both) and the latency the bridge adds, for
core NATS (`nc.request`) and JetStream (`js.publish` + Reply-To, acked after the pgmq commit)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from bench.common import median, pct, ready
from orchestrator.core.bus import Bus, SelfSettlingBus
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo

N = int(os.environ.get("BENCH_NATS_N", "400"))
ROUNDS = int(os.environ.get("BENCH_NATS_ROUNDS", "3"))
C = int(os.environ.get("BENCH_NATS_CONCURRENCY", "8"))
MSG = {"agent_id": "bench", "task_type": "chat",
       "messages": [{"role": "user", "content": "summarise the change in three sentences " * 4}]}


def _server(store: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    p = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", str(port),
                          "-js", "-sd", store], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, f"nats://127.0.0.1:{port}"


def _responder(s, stop: threading.Event) -> list[threading.Thread]:
    """Answers every llm_requests message on its reply_to at once (no provider): the pgmq side's cost only."""
    nexus = SelfSettlingBus(role_conninfo(s, "shared_queue", "svc_nexus"), poll_ms=200, pool_size=4)

    def answer(m):
        nexus.reply_and_ack(m, m.body["reply_to"], {"request_id": m.body["id"], "result": "ok"})

    ts = [threading.Thread(target=lambda: nexus.consume("llm_requests", answer, stop=stop, batch_size=10), daemon=True)
          for _ in range(2)]
    for t in ts:
        t.start()
    return ts


def _direct(s, n: int) -> tuple[float, list[float]]:
    """C agents sending to pgmq and waiting for their results (Bus.request), as Singularity's agents do."""
    sing = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), poll_ms=200, pool_size=C + 2)
    lat: list[float] = []
    per = n // C

    def agent():
        for _ in range(per):
            t0 = time.perf_counter()
            sing.request("llm_requests", MSG, reply_to="llm_results", timeout=30)
            lat.append((time.perf_counter() - t0) * 1000)

    for _ in range(10):
        sing.request("llm_requests", MSG, reply_to="llm_results", timeout=30)
    ts = [threading.Thread(target=agent) for _ in range(C)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rate = per * C / (time.perf_counter() - t0)
    sing.close()
    return rate, lat


async def _bridged(url: str, n: int, jetstream: bool) -> tuple[float, list[float]]:
    """C agents on NATS: core `nc.request`, or JetStream `js.publish` with a Reply-To naming the agent's own
    reply subject (one subscription per agent, results matched by request_id)."""
    import nats

    from orchestrator.core.messages import ulid

    nc = await nats.connect(url)
    js = nc.jetstream() if jetstream else None
    lat: list[float] = []
    per = n // C

    async def agent(k: int, count: int, record: bool) -> None:
        waiting: dict[str, asyncio.Future] = {}
        inbox = f"bench.agent.{k}.{ulid()}"

        async def on_reply(m):
            r = json.loads(m.data)
            fut = waiting.pop(r.get("request_id"), None)
            if fut is not None:
                fut.set_result(r)
        sub = await nc.subscribe(inbox, cb=on_reply) if jetstream else None
        for _ in range(count):
            rid = ulid()
            body = json.dumps({**MSG, "id": rid}).encode()
            t0 = time.perf_counter()
            if jetstream:
                fut = waiting[rid] = asyncio.get_running_loop().create_future()
                await js.publish("llm_requests", body, headers={"Reply-To": inbox})
                r = await asyncio.wait_for(fut, 30)
            else:
                r = json.loads((await nc.request("llm_requests", body, timeout=30)).data)
            assert r.get("result") == "ok", r  # the responder's answer (not an error, not a stream's ack)
            if record:
                lat.append((time.perf_counter() - t0) * 1000)
        if sub is not None:
            await sub.unsubscribe()

    await agent(0, 10, False)
    t0 = time.perf_counter()
    await asyncio.gather(*(agent(k, per, True) for k in range(C)))
    rate = per * C / (time.perf_counter() - t0)
    await nc.close()
    return rate, lat


def _via_bridge(s, url: str, mode: str, n: int) -> tuple[float, list[float]]:
    from orchestrator.nats.settings import NatsSettings
    from orchestrator.nats.worker import build

    ns = NatsSettings.from_env({"NATS_URL": url, "NATS_MODE": mode})
    bridge = build(s, ns).start()
    try:
        bridge.ready.wait(15)
        return asyncio.run(_bridged(url, n, mode == "jetstream"))
    finally:
        bridge.stop()
        bridge.ledger.bus.close()
        bridge.results_bus.close()
        if mode == "jetstream":  # the stream would answer the next core run's requests with its acks
            asyncio.run(_drop_stream(url, ns.stream))


async def _drop_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url)
    await nc.jetstream().delete_stream(stream)
    await nc.close()


def run() -> list[tuple[str, str, str]]:
    s = ready()
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for q in ("llm_requests", "llm_results"):
            c.execute("SELECT pgmq.purge_queue(%s)", (q,))
        c.execute("SELECT nats.set_phase(1, 'bench')")
        since = c.execute("SELECT now() AS t").fetchone()["t"]
    store = tempfile.mkdtemp(prefix="bench-nats-")
    server, url = _server(store)
    stop = threading.Event()
    ts = _responder(s, stop)
    runs: dict[str, list[tuple[float, list[float]]]] = {"direct": [], "core": [], "jetstream": []}
    try:
        # ROUNDS rounds, each measuring the three paths one after the other: the machine's load moves, and a
        # ratio within one round compares like with like; the median round's ratio is reported
        for _ in range(ROUNDS):
            runs["direct"].append(_direct(s, N))
            runs["core"].append(_via_bridge(s, url, "core", N))
            runs["jetstream"].append(_via_bridge(s, url, "jetstream", N))
    finally:
        stop.set()
        for t in ts:
            t.join(5)
        server.terminate()
        server.wait(10)
        shutil.rmtree(store, ignore_errors=True)
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("DELETE FROM nats.requests WHERE received_at >= %s", (since,))  # the bench's own traffic
    rate = {k: median([r for r, _ in v]) for k, v in runs.items()}
    ratio = {k: median([b[0] / a[0] for a, b in zip(runs["direct"], runs[k], strict=True)]) for k in ("core", "jetstream")}
    lat = {k: [x for _, ls in v for x in ls] for k, v in runs.items()}
    dl, cl, jl = lat["direct"], lat["core"], lat["jetstream"]
    return [
        (f"direct pgmq request->result, {C} agents (req/s, median of {ROUNDS})", f"{rate['direct']:.0f}", "-"),
        (f"bridged core NATS request->result, {C} agents (req/s)", f"{rate['core']:.0f} ({ratio['core']:.2f}x)",
         ">= 0.7x direct"),
        (f"bridged JetStream publish->result, {C} agents (req/s)", f"{rate['jetstream']:.0f} ({ratio['jetstream']:.2f}x)",
         ">= 0.7x direct"),
        ("latency direct p50 / p99 (ms)", f"{pct(dl, 50):.1f} / {pct(dl, 99):.1f}", "-"),
        ("latency core NATS p50 / p99 (ms)", f"{pct(cl, 50):.1f} / {pct(cl, 99):.1f}", "-"),
        ("latency JetStream p50 / p99 (ms)", f"{pct(jl, 50):.1f} / {pct(jl, 99):.1f}", "-"),
        ("added by the bridge, core p50 / p99 (ms)", f"{pct(cl, 50) - pct(dl, 50):.1f} / {pct(cl, 99) - pct(dl, 99):.1f}", "-"),
        ("added by the bridge, JetStream p50 / p99 (ms)", f"{pct(jl, 50) - pct(dl, 50):.1f} / {pct(jl, 99) - pct(dl, 99):.1f}",
         "-"),
    ]
