"""End to end: LLM requests answered per second by `orchestrator daemon --only nexus` (offline provider),
sent in batches by this process as a foreign client (plain psycopg, pgmq.send_batch as svc_singularity),
against raw pgmq's request capacity measured in the same run (the same client, the same queues, and a raw
responder: pgmq.read + send_batch of the results + archive). Then the latency at half the measured rate,
and the throughput curve against NEXUS_CONCURRENCY."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg
from psycopg.types.json import Jsonb

from bench.common import pct, ready
from orchestrator.core.messages import ulid
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo
from orchestrator.nexus.settings import NexusSettings

N = int(os.environ.get("BENCH_E2E_N", "5000"))
CURVE_N = int(os.environ.get("BENCH_E2E_CURVE_N", "3000"))
BATCH = 10
AGENT = "bench-e2e"
REQ, RES = "llm_requests", "llm_results"


def _say(msg: str) -> None:
    print(f"   bench.throughput: {msg}", file=sys.stderr, flush=True)


class Agent:
    """The requesting side: a sender thread (batches of BATCH, paced at RATE/s when given) and a reader
    thread that reads and archives the results, timing each request from its send to its result's read."""

    def __init__(self, s, n: int, rate: float | None = None):
        self.s, self.n, self.rate = s, n, rate
        self.sent: dict[str, float] = {}
        self.lat: list[float] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def _send(self) -> None:
        with connect(role_conninfo(self.s, "shared_queue", "svc_singularity")) as c:
            t0 = time.perf_counter()
            for k in range(0, self.n, BATCH):
                if self.rate:
                    wait = t0 + k / self.rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                ids = [ulid() for _ in range(min(BATCH, self.n - k))]
                now = time.perf_counter()
                self.sent.update({i: now for i in ids})
                c.execute("SELECT pgmq.send_batch(%s, %s::jsonb[])", (REQ, [Jsonb(
                    {"id": i, "agent_id": AGENT, "task_type": "bench-offline", "reply_to": RES,
                     "messages": [{"role": "user", "content": "ping"}]}) for i in ids]))

    def _read(self, deadline: float) -> None:
        got = 0
        with connect(role_conninfo(self.s, "shared_queue", "svc_singularity")) as c:
            while got < self.n and time.perf_counter() < deadline:
                rows = c.execute("SELECT msg_id, message FROM pgmq.read(%s, 30, 100)", (RES,)).fetchall()
                if not rows:
                    time.sleep(0.002)
                    continue
                now = time.perf_counter()
                for r in rows:
                    t = self.sent.get(r["message"].get("request_id"))
                    if t is not None:
                        got += 1
                        self.lat.append((now - t) * 1000)
                        if r["message"].get("error"):
                            self.errors.append(r["message"]["error"])
                c.execute("SELECT pgmq.archive(%s, %s::bigint[])", (RES, [r["msg_id"] for r in rows]))

    def run(self, timeout: float = 300) -> float:
        """Send all, read all; requests answered per second (from the first send to the last result)."""
        t0 = time.perf_counter()
        reader = threading.Thread(target=self._read, args=(t0 + timeout,))
        reader.start()
        self._send()
        reader.join()
        took = time.perf_counter() - t0
        if len(self.lat) < self.n:
            raise RuntimeError(f"only {len(self.lat)} of {self.n} requests were answered within {timeout:.0f}s")
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} requests answered with an error, e.g. {self.errors[0]}")
        return self.n / took


def _raw_responder(s, stop: threading.Event) -> None:
    """What the nexus worker does, in raw pgmq and nothing else: read 10, send their results, archive them."""
    with connect(role_conninfo(s, "shared_queue", "svc_nexus")) as c:
        while not stop.is_set():
            rows = c.execute("SELECT msg_id, message FROM pgmq.read(%s, 30, %s)", (REQ, BATCH)).fetchall()
            if not rows:
                time.sleep(0.002)
                continue
            c.execute("SELECT pgmq.send_batch(%s, %s::jsonb[])", (RES, [Jsonb(
                {"request_id": r["message"]["id"], "result": "ok", "model": "offline",
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1}}) for r in rows]))
            c.execute("SELECT pgmq.archive(%s, %s::bigint[])", (REQ, [r["msg_id"] for r in rows]))


def _clean(s) -> None:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("SELECT pgmq.purge_queue(%s)", (REQ,))
        c.execute("SELECT pgmq.purge_queue(%s)", (RES,))
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("DELETE FROM nexus.llm_calls WHERE agent_id = %s", (AGENT,))
        c.execute("DELETE FROM nexus.budget_usage WHERE agent_id = %s", (AGENT,))


def raw_capacity(s, n: int) -> float:
    stop = threading.Event()
    t = threading.Thread(target=_raw_responder, args=(s, stop), daemon=True)
    t.start()
    try:
        return Agent(s, n).run()
    finally:
        stop.set()
        t.join(10)


class Daemon:
    """`orchestrator daemon --only nexus` in its own process, with ENV on top of this one's."""

    def __init__(self, env: dict[str, str]):
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Daemon:
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "nexus"],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def end_to_end(s, n: int, concurrency: int, rate: float | None = None) -> Agent:
    with Daemon({"NEXUS_CONCURRENCY": str(concurrency)}):
        Agent(s, 20).run(timeout=60)  # warm: started, connected, listening
        a = Agent(s, n, rate)
        a.rate_got = a.run()
        return a


def run() -> list[tuple[str, str, str]]:
    s = ready()
    conc = NexusSettings.from_env().concurrency  # NEXUS_CONCURRENCY, or the daemon's default
    _clean(s)
    raw, e2e = [], []
    try:
        for i in range(3):  # interleaved rounds, median of each: the machine's noise hits both alike
            raw.append(raw_capacity(s, N))
            _say(f"round {i + 1}/3: raw pgmq request capacity {raw[-1]:.0f} requests/s")
            e2e.append(end_to_end(s, N, conc).rate_got)
            _say(f"round {i + 1}/3: nexus worker end to end {e2e[-1]:.0f} requests/s")
        r, e = sorted(raw)[1], sorted(e2e)[1]
        half = end_to_end(s, min(N, int(e * 10)), conc, rate=e / 2)
        _say(f"latency at {e / 2:.0f} requests/s: p50 {pct(half.lat, 50):.1f} ms")
        curve = []
        for c in (1, 2, 4, 8):
            curve.append(f"{c}: {end_to_end(s, CURVE_N, c).rate_got:.0f}")
            _say(f"NEXUS_CONCURRENCY={curve[-1]} requests/s")
    finally:
        _clean(s)
    return [
        (f"LLM requests answered end to end, nexus worker (offline, NEXUS_CONCURRENCY={conc}) vs raw pgmq request "
         f"capacity ({N} requests in batches of {BATCH}; requests/s)", f"{e:.0f} vs {r:.0f} = {e / r:.2f}x", ">= 0.5x"),
        (f"LLM request -> result latency at half that rate ({e / 2:.0f}/s), p50 / p99 (ms)",
         f"{pct(half.lat, 50):.1f} / {pct(half.lat, 99):.1f}", "-"),
        (f"end to end requests/s by NEXUS_CONCURRENCY ({CURVE_N} requests each)", ", ".join(curve), "-"),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
