"""Genesis: sandbox start + Python hello world over the bare interpreter (same code, same run), and
trivial jobs per second end to end (job_requests -> genesis worker -> job_results)."""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import pct, ready
from orchestrator.core.bus import Bus
from orchestrator.core.messages import ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.genesis.sandbox import Limits, Sandbox
from orchestrator.infra.db import role_conninfo

N = int(os.environ.get("BENCH_GENESIS_N", "60"))
JOBS = int(os.environ.get("BENCH_GENESIS_JOBS", "200"))
HELLO = "print('hello')\n"


def _start_overhead() -> list[tuple[str, str, str]]:
    sb = Sandbox()
    d = tempfile.mkdtemp()
    path = os.path.join(d, "main.py")
    with open(path, "w") as fh:
        fh.write(HELLO)
    bare, boxed, cpu_bare, cpu_boxed = [], [], [], []
    for _ in range(5):
        sb.run(HELLO, "python", "run", Limits())
    for _ in range(N):  # interleaved so both see the same machine load
        c0, t0 = _child_cpu(), time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-u", path], capture_output=True, check=True)
        bare.append((time.perf_counter() - t0) * 1000)
        c1, t0 = _child_cpu(), time.perf_counter()
        r = sb.run(HELLO, "python", "run", Limits())
        boxed.append((time.perf_counter() - t0) * 1000)
        cpu_bare.append(c1 - c0)
        cpu_boxed.append(_child_cpu() - c1)
        assert r["stdout"] == "hello\n", r
    b, x = pct(bare, 50), pct(boxed, 50)
    cb, cx = pct(cpu_bare, 50), pct(cpu_boxed, 50)
    load = os.getloadavg()[0]
    return [("genesis: bare python3 hello p50 (ms)", f"{b:.1f}", "baseline"),
            ("genesis: sandboxed python hello p50 (ms)", f"{x:.1f}", "-"),
            (f"genesis: sandbox overhead p50 (ms over bare; load {load:.1f})", f"{x - b:.1f} ({x / b:.2f}x bare)",
             "<= 50 ms"),
            ("genesis: CPU per hello, bare -> sandboxed (ms, load-independent)", f"{cb:.1f} -> {cx:.1f} "
             f"({cx / cb:.2f}x)", "-")]


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def _throughput(s) -> list[tuple[str, str, str]]:
    from orchestrator.genesis.worker import concurrency, make

    w = make(s)
    sup = Supervisor([w], grace_s=5)
    sup.start()
    bus = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="bench", pool_size=2)
    try:
        warm = ulid()
        bus.publish("job_requests", {"id": warm, "language": "python", "mode": "run", "code": "print(0)"})
        bus.await_reply("job_results", warm, timeout=30)
        ids = [ulid() for _ in range(JOBS)]
        t0 = time.perf_counter()
        bus.publish_batch("job_requests", [{"id": i, "language": "python", "mode": "run", "code": "print(1)"}
                                           for i in ids])
        want, seen = set(ids), set()
        while want - seen and time.perf_counter() - t0 < 120:
            msgs = bus.read("job_results", 100)
            for m in msgs:
                seen.add(m.body["request_id"])
            bus.ack_many(msgs)
            if not msgs:
                time.sleep(0.01)
        el = time.perf_counter() - t0
        n = concurrency()
        # baseline: the same number of bare interpreter runs with the same parallelism, no sandbox, no bus
        d = tempfile.mkdtemp()
        path = os.path.join(d, "main.py")
        with open(path, "w") as fh:
            fh.write("print(1)\n")
        t1 = time.perf_counter()
        with ThreadPoolExecutor(n) as ex:
            list(ex.map(lambda _i: subprocess.run(["/usr/bin/python3", path], capture_output=True), range(JOBS)))
        bare = JOBS / (time.perf_counter() - t1)
    finally:
        bus.close()
        sup.request_stop()
        sup.shutdown()
    rate = len(seen & want) / el
    return [(f"genesis: trivial jobs/s end to end ({n} slots, {JOBS} jobs)", f"{rate:.1f} ({rate / bare:.2f}x bare)",
             ">= 20/s on 2 cores"),
            ("genesis: bare python3 runs/s, same parallelism", f"{bare:.1f}", "baseline")]


def run() -> list[tuple[str, str, str]]:
    s = ready()
    return _start_overhead() + _throughput(s)
