"""Bus vs raw pgmq, measured in the same run: publish, consume+ack (batch 1 and 10), request->reply, idle RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from psycopg.types.json import Jsonb

from bench.common import pct, ready
from orchestrator.core.bus import Bus, SelfSettlingBus
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo

N = int(os.environ.get("BENCH_BUS_N", "3000"))
MSG = {"agent_id": "bench", "task_type": "chat",
       "messages": [{"role": "user", "content": "summarise the change in three sentences " * 4}]}
RAW_Q, BUS_Q = "bench_raw", "bench_bus"


def _setup(s) -> None:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for q in (RAW_Q, BUS_Q):
            c.execute("SELECT bus.ensure_queue(%s, 'llm_requests')", (q,))
            c.execute("SELECT pgmq.purge_queue(%s)", (q,))
            c.execute(f"TRUNCATE pgmq.a_{q}")


def _teardown(s) -> None:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for q in (RAW_Q, BUS_Q):
            c.execute("SELECT bus.drop_queue(%s)", (q,))


def _raw_send(conninfo: str, n: int) -> float:
    with connect(conninfo) as c:
        t0 = time.perf_counter()
        for _ in range(n):
            c.execute("SELECT pgmq.send(%s, %s)", (RAW_Q, Jsonb(MSG)))
        return n / (time.perf_counter() - t0)


def _bus_send(bus: Bus, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        bus.publish(BUS_Q, MSG)
    return n / (time.perf_counter() - t0)


def _raw_consume(conninfo: str, n: int, batch: int) -> float:
    with connect(conninfo) as c:
        done, t0 = 0, time.perf_counter()
        while done < n:
            # the whole message, as any consumer needs it (the bus returns it too)
            rows = c.execute("SELECT * FROM pgmq.read(%s, 30, %s)", (RAW_Q, batch)).fetchall()
            if not rows:
                break
            if batch == 1:
                c.execute("SELECT pgmq.archive(%s, %s::bigint)", (RAW_Q, rows[0]["msg_id"]))
            else:
                c.execute("SELECT pgmq.archive(%s, %s::bigint[])", (RAW_Q, [r["msg_id"] for r in rows]))
            done += len(rows)
        return done / (time.perf_counter() - t0)


def _bus_consume(bus: Bus, n: int, batch: int) -> float:
    done, t0 = 0, time.perf_counter()
    while done < n:
        msgs = bus.read(BUS_Q, batch)
        if not msgs:
            break
        if batch == 1:
            bus.ack(msgs[0])
        else:
            bus.ack_many(msgs)
        done += len(msgs)
    return done / (time.perf_counter() - t0)


def _in_threads(work, senders: int, per: int) -> float:
    """Messages/s of SENDERS threads each running WORK() (which sends PER messages)."""
    ths = [threading.Thread(target=work) for _ in range(senders)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return senders * per / (time.perf_counter() - t0)


def _concurrent_raw_send(conninfo: str, senders: int, per: int) -> float:
    return _in_threads(lambda: _raw_send(conninfo, per), senders, per)


def _concurrent_bus_send(conninfo: str, senders: int, per: int) -> float:
    bus = Bus(conninfo, source="bench", pool_size=senders)
    bus.publish(BUS_Q, MSG)  # rules loaded, pool warm
    try:
        return _in_threads(lambda: _bus_send(bus, per), senders, per)
    finally:
        bus.close()


def _wake_latency(conninfo: str, n: int) -> list[float]:
    """From a publish's return to a LISTEN-ing consumer's wake-up (ms), n times."""
    bus = Bus(conninfo, source="bench")
    bus.notifier.subscribe(BUS_Q)
    lat = []
    for _ in range(n):
        gen = bus.notifier.generation(BUS_Q)
        bus.publish(BUS_Q, MSG)
        t0 = time.perf_counter()
        bus.notifier.wait(BUS_Q, gen, 5)
        lat.append((time.perf_counter() - t0) * 1000)
    bus.close()
    return lat


def _senders(s, sender: str) -> list[tuple[str, str, str]]:
    """8 concurrent senders with wake-ups vs none: the bus (wake after commit), and foreign raw pgmq.send
    (the statement trigger wakes inside the commit); the wake-up's latency."""
    with connect(owner_conninfo(s, "shared_queue")) as c:
        bus8 = _concurrent_bus_send(sender, 8, 300)
        raw8_wake = _concurrent_raw_send(sender, 8, 300)
        c.execute(f"ALTER TABLE pgmq.q_{RAW_Q} DISABLE TRIGGER bus_wake")
        try:
            raw8_off = _concurrent_raw_send(sender, 8, 300)
        finally:
            c.execute(f"ALTER TABLE pgmq.q_{RAW_Q} ENABLE TRIGGER bus_wake")
    lat = _wake_latency(sender, 300)
    return [("8 concurrent senders: bus (wake-up after commit) vs raw pgmq.send without wake-ups (msgs/s)",
             f"{bus8:.0f} vs {raw8_off:.0f} = {bus8 / raw8_off:.2f}x", ">= 0.85x"),
            ("8 concurrent raw pgmq.send senders: statement wake-up in the commit vs none (msgs/s)",
             f"{raw8_wake:.0f} vs {raw8_off:.0f} = {raw8_wake / raw8_off:.2f}x", "foreign clients"),
            ("wake-up latency, publish returned -> LISTEN consumer woken, p50 / p99 (ms)",
             f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f}", "p50 <= 5 ms")]


def _round_trips(s, n: int) -> list[float]:
    sing = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), poll_ms=1000)
    # the responder settles each request itself (reply_and_ack), as the nexus worker does
    nexus = SelfSettlingBus(role_conninfo(s, "shared_queue", "svc_nexus"), poll_ms=1000)
    stop = threading.Event()

    def answer(m):
        nexus.reply_and_ack(m, m.body["reply_to"], {"request_id": m.body["id"], "result": "ok"})

    t = threading.Thread(target=lambda: nexus.consume("llm_requests", answer, stop=stop, batch_size=1), daemon=True)
    t.start()
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("SELECT pgmq.purge_queue('llm_requests')")
        c.execute("SELECT pgmq.purge_queue('llm_results')")
    lat = []
    try:
        for _ in range(20):
            sing.request("llm_requests", MSG, reply_to="llm_results", timeout=10)
        for _ in range(n):
            t0 = time.perf_counter()
            sing.request("llm_requests", MSG, reply_to="llm_results", timeout=10)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        t.join(5)
        sing.close()
        nexus.close()
    return lat


def _idle_rss_mb() -> float:
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)
        with open(f"/proc/{p.pid}/status") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
        return kb / 1024
    finally:
        p.terminate()
        p.wait(30)


def run() -> list[tuple[str, str, str]]:
    s = ready()
    _setup(s)
    owner = owner_conninfo(s, "shared_queue")
    sender = role_conninfo(s, "shared_queue", "svc_singularity")
    rows = []
    try:
        bus = Bus(sender, source="bench")
        consumer = Bus(role_conninfo(s, "shared_queue", "svc_nexus"))
        bus.publish(BUS_Q, MSG)  # load rules, warm the pool
        _raw_send(sender, 200)
        _bus_send(bus, 200)
        raw_pub, bus_pub = [], []
        for _ in range(3):  # interleave to share the machine's noise
            raw_pub.append(_raw_send(sender, N // 3))
            bus_pub.append(_bus_send(bus, N // 3))
        rp, bp = sorted(raw_pub)[1], sorted(bus_pub)[1]
        rows.append(("publish: bus vs raw pgmq.send (msgs/s)", f"{bp:.0f} vs {rp:.0f} = {bp / rp:.2f}x", ">= 0.9x"))
        print(f"   bench.bus: publish {bp:.0f} vs {rp:.0f} msgs/s", file=sys.stderr, flush=True)
        for batch in (1, 10):
            raw_c, bus_c = [], []
            for _ in range(3):  # interleaved rounds, median of each, as for publish
                raw_c.append(_raw_consume(owner, N // 3, batch))
                bus_c.append(_bus_consume(consumer, N // 3, batch))
            rc, bc = sorted(raw_c)[1], sorted(bus_c)[1]
            rows.append((f"consume+ack batch {batch}: bus vs raw read+archive (msgs/s)",
                         f"{bc:.0f} vs {rc:.0f} = {bc / rc:.2f}x", ">= 0.9x at batch 10" if batch == 10 else "-"))
            print(f"   bench.bus: consume+ack batch {batch}: {bc:.0f} vs {rc:.0f} msgs/s", file=sys.stderr, flush=True)
            # refill for the next round
            bus.publish_batch(RAW_Q, [MSG] * (N + 200))
            bus.publish_batch(BUS_Q, [MSG] * (N + 200))
        rows += _senders(s, sender)
        lat = _round_trips(s, int(os.environ.get("BENCH_RTT_N", "500")))
        rows.append(("request->reply round trip, instant responder p50 (ms)", f"{pct(lat, 50):.2f}", "<= 5 ms"))
        rows.append(("request->reply round trip, instant responder p99 (ms)", f"{pct(lat, 99):.2f}", "<= 25 ms"))
        bus.close()
        consumer.close()
    finally:
        _teardown(s)
    rows.append(("idle `orchestrator daemon` RSS (MB)", f"{_idle_rss_mb():.0f}", "<= 100 MB"))
    return rows
