"""`make soak`: the full daemon under a steady mixed load for SOAK_MINUTES (default 10) at SOAK_RATE requests/s
(default 100), mixed as SOAK_MIX says (default `llm:9,job:1`: nine LLM requests to one code job, as agents call
models far more often than they run code).

Reports throughput, request->result p50/p99 per message kind, and the daemon's RSS over time;
fails (exit 1) if RSS is not flat (last interval above the first by more than 15% + 10 MB) or if
any request went unanswered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from bench.common import pct, ready
from orchestrator.core.bus import Bus
from orchestrator.infra.db import role_conninfo

MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
RATE = float(os.environ.get("SOAK_RATE", "100"))  # requests per second, all kinds together
MIX = os.environ.get("SOAK_MIX", "llm:9,job:1")
SAMPLE_S = float(os.environ.get("SOAK_SAMPLE_S", "30"))

LOADS = {
    # kind: (request queue, reply queue, message, worker that must answer)
    "llm": ("llm_requests", "llm_results",
            {"agent_id": "soak", "task_type": "chat", "messages": [{"role": "user", "content": "status?"}]}, "nexus"),
    "job": ("job_requests", "job_results", {"code": "print(sum(range(100)))", "language": "python", "mode": "run"},
            "genesis"),
}


def _mix(kinds: dict) -> list[str]:
    """SOAK_MIX as a repeating sequence of kinds, e.g. llm:9,job:1 -> 9 x llm, 1 x job."""
    out = []
    for part in MIX.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in LOADS or not weight.isdigit():
            raise SystemExit(f"SOAK_MIX={MIX!r}: each part is KIND:WEIGHT with KIND one of {', '.join(LOADS)}, "
                             "e.g. llm:9,job:1")
        if name in kinds:
            out += [name] * int(weight)
    return out


def _rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def main() -> int:
    s = ready()
    from orchestrator.cli.workers import factories as load_all

    workers = load_all()
    kinds = {k: v for k, v in LOADS.items() if v[3] in workers}
    if not kinds:
        print("no consumer workers registered (nexus, genesis): nothing to soak")
        return 1
    daemon = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon"], stdout=subprocess.DEVNULL,
                              stderr=open(s.state_dir / "soak-daemon.log", "w"))
    time.sleep(5)
    bus = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="soak", pool_size=8)
    lat: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def one(kind: str) -> None:
        q, reply, msg, _w = kinds[kind]
        start = time.monotonic()
        try:
            bus.request(q, msg, reply_to=reply, timeout=60)
            lat[kind].append((start - t0, (time.monotonic() - start) * 1000))
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{kind}: {e}")

    def sampler() -> None:
        while not stop.is_set():
            rss.append((time.monotonic() - t0, _rss_mb(daemon.pid)))
            stop.wait(SAMPLE_S)

    threading.Thread(target=sampler, daemon=True).start()
    threads: list[threading.Thread] = []
    names = _mix(kinds)
    i = 0
    end = t0 + MINUTES * 60
    print(f"soak: {MINUTES} min at {RATE} req/s, mix {MIX}", flush=True)
    while time.monotonic() < end:
        th = threading.Thread(target=one, args=(names[i % len(names)],), daemon=True)
        th.start()
        threads.append(th)
        i += 1
        threads = [t for t in threads if t.is_alive()]
        if i % int(max(RATE, 1) * SAMPLE_S) == 0:
            print(f"soak: {time.monotonic() - t0:.0f}s, {i} sent, {sum(len(v) for v in lat.values())} answered, "
                  f"{len(errors)} errors", flush=True)
        time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
    for t in threads:
        t.join(90)
    stop.set()
    rss.append((time.monotonic() - t0, _rss_mb(daemon.pid)))
    daemon.terminate()
    daemon.wait(60)
    bus.close()
    elapsed = time.monotonic() - t0
    done = sum(len(v) for v in lat.values())
    print(f"\n| figure | value |\n| --- | --- |\n| requests sent / answered | {i} / {done} |")
    print(f"| throughput (answered/s) | {done / elapsed:.1f} |")
    for k, v in lat.items():
        ms = [x[1] for x in v]
        print(f"| {k} request->result p50 / p99 (ms) | {pct(ms, 50):.1f} / {pct(ms, 99):.1f} |")
    print("\nRSS of the daemon and its children over time (MB):")
    for at, mb in rss:
        print(f"  {at:7.0f}s  {mb:7.1f}")
    first, last = rss[0][1] if len(rss) < 3 else rss[1][1], rss[-1][1]
    flat = last <= first * 1.15 + 10
    print(f"RSS {'flat' if flat else 'GROWING'}: {first:.1f} MB -> {last:.1f} MB; errors: {len(errors)}")
    for e in errors[:10]:
        print("  ", e)
    return 0 if flat and not errors and done == i else 1


if __name__ == "__main__":
    sys.exit(main())
