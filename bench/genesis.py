"""Genesis: sandbox start + Python hello world over the bare interpreter (same code, same run), and
trivial jobs per second end to end (job_requests -> genesis worker -> job_results) for Python, Elixir and
Rust (compiled inside the job), each against bare runs of the same command at the same parallelism; and the
CPU a trivial job costs end to end (the sandbox's processes, this process: the worker and the bench's client,
and PostgreSQL) against the CPU of one bare run. Progress goes to stderr as each phase starts."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import pct, ready
from orchestrator.core.bus import Bus
from orchestrator.core.messages import ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.genesis.sandbox import Limits, Sandbox, languages
from orchestrator.infra.cluster import Cluster
from orchestrator.infra.db import role_conninfo

N = int(os.environ.get("BENCH_GENESIS_N", "60"))
JOBS = int(os.environ.get("BENCH_GENESIS_JOBS", "200"))
HELLO = "print('hello')\n"
LANG_JOBS = int(os.environ.get("BENCH_GENESIS_LANG_JOBS", "40"))
# seed 002's compiled/VM languages: a hello world, and what the bare baseline runs (the sandbox's own command)
COMPILED = {"elixir": ('IO.puts("hello")\n', "`elixir main.exs`"),
            "rust": ('fn main() {\n    println!("hello");\n}\n', "`rustc main.rs && ./main` (compile + run)")}


def _progress(text: str) -> None:
    print(f"   genesis: {text}", file=sys.stderr, flush=True)


def _start_overhead() -> list[tuple[str, str, str]]:
    _progress(f"sandbox start: {N} python hello runs, bare and sandboxed in turn")
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


def _drain(bus: Bus, jobs: list[dict]) -> float:
    """Publish JOBS on job_requests and wait for every result: results per second (0 if some never came).
    job_results is read when its insert notification arrives (at most every 20 ms), not polled every 10 ms:
    the polling cost the machine ~3 reads per job, CPU taken from the worker under test."""
    ids = [ulid() for _ in jobs]
    bus.notifier.subscribe("job_results")
    t0 = time.perf_counter()
    bus.publish_batch("job_requests", [{"id": i, "mode": "run", **j} for i, j in zip(ids, jobs, strict=True)])
    want, seen, failed = set(ids), set(), []
    while want - seen and time.perf_counter() - t0 < 300:
        gen = bus.notifier.generation("job_results")
        msgs = bus.read("job_results", 100)
        for m in msgs:
            seen.add(m.body["request_id"])
            if m.body.get("exit_code") != 0:
                failed.append(m.body.get("error"))
        bus.ack_many(msgs)
        if not msgs:
            bus.wait_for("job_results", gen, 0.2)
            time.sleep(0.02)  # let a few more results arrive: one read for several
    el = time.perf_counter() - t0
    assert not failed, f"{len(failed)} jobs failed, e.g. {failed[0]}"
    return len(seen & want) / el


def _bare(argv_env, n: int, jobs: int) -> float:
    """Runs/s of ARGV_ENV(dir) -> (argv, env), each in its own fresh directory, N at a time: no sandbox, no bus."""
    def one(_i):
        d = tempfile.mkdtemp(prefix="bench-genesis-")
        try:
            argv, env = argv_env(d)
            subprocess.run(argv, cwd=d, env=env, capture_output=True, check=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    t1 = time.perf_counter()
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(one, range(jobs)))
    return jobs / (time.perf_counter() - t1)


def _bare_command(language: str, code: str):
    """The sandbox's own command for LANGUAGE (same argv, same extra environment), run in a plain directory."""
    cmd = languages.command(language, "run", 256)

    def argv_env(d: str):
        with open(os.path.join(d, cmd.filename), "w") as fh:
            fh.write(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": d, "TMPDIR": d, "LANG": "C.UTF-8", **dict(cmd.env)}
        return [a.replace("/work/", f"{d}/") for a in cmd.argv], env
    return argv_env


class _Cpu:
    """CPU used so far, in ms: this process (the worker's threads and the bench's client), its reaped children
    (the sandboxes, the bare runs) and the cluster's PostgreSQL (postmaster, its live children, and through
    the postmaster's own counters those that exited). PostgreSQL: 0 for an external cluster (not visible)."""

    def __init__(self, s):
        self.postmaster = None
        if not s.external:
            try:
                with open(Cluster(s).data_dir / "postmaster.pid") as fh:
                    self.postmaster = int(fh.readline())
            except (OSError, ValueError):
                self.postmaster = None

    def sample(self) -> tuple[float, float, float]:
        kids, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        return ((kids.ru_utime + kids.ru_stime) * 1000, (me.ru_utime + me.ru_stime) * 1000, self._postgres())

    def _postgres(self) -> float:
        if self.postmaster is None:
            return 0.0
        ticks = 0
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # not a process, or it just ended
            if int(f[1]) == self.postmaster:  # a backend or auxiliary process: its own utime + stime
                ticks += int(f[11]) + int(f[12])
            elif pid == str(self.postmaster):  # its own, and its exited children's (cutime + cstime)
                ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def _python_rows(bus: Bus, cpu: _Cpu, n: int) -> list[tuple[str, str, str]]:
    """Trivial Python jobs end to end against bare runs at the same parallelism: rate, and CPU per job."""
    _progress(f"{JOBS} trivial python jobs end to end through the worker ({n} slots)")
    _drain(bus, [{"language": "python", "code": "print(0)"}])  # warm up
    c0 = cpu.sample()
    rate = _drain(bus, [{"language": "python", "code": "print(1)"}] * JOBS)
    c1 = cpu.sample()
    # baseline: the same number of bare interpreter runs with the same parallelism, no sandbox, no bus
    _progress(f"{JOBS} bare python3 runs, {n} at a time")
    b0 = cpu.sample()
    bare = _bare(_bare_command("python", "print(1)\n"), n, JOBS)
    b1 = cpu.sample()
    boxed, worker, pg = ((c1[i] - c0[i]) / JOBS for i in range(3))
    bare_ms = ((b1[0] - b0[0]) + (b1[1] - b0[1])) / JOBS  # the runs and this process starting them
    total = boxed + worker + pg
    return [(f"genesis: trivial jobs/s end to end ({n} slots, {JOBS} jobs)",
             f"{rate:.1f} ({rate / bare:.2f}x bare)", ">= 20/s on 2 cores"),
            ("genesis: bare python3 runs/s, same parallelism", f"{bare:.1f}", "baseline"),
            ("genesis: CPU per trivial job end to end (ms: sandbox processes + worker and bench client "
             "+ PostgreSQL)", f"{boxed:.1f} + {worker:.1f} + {pg:.1f} = {total:.1f} ({total / bare_ms:.2f}x bare)",
             "-"),
            ("genesis: CPU per bare python3 run, same parallelism (ms: the run + starting it)", f"{bare_ms:.1f}",
             "baseline")]


def _compiled_rows(bus: Bus, n: int) -> list[tuple[str, str, str]]:
    rows = []
    for lang, (code, what) in COMPILED.items():
        if not os.path.exists(languages.ELIXIR if lang == "elixir" else languages.RUSTC):
            rows.append((f"genesis: {lang} hello jobs/s end to end", "skipped: not installed", "-"))
            continue
        _progress(f"{LANG_JOBS} {lang} hello jobs end to end, then {LANG_JOBS} bare runs")
        _drain(bus, [{"language": lang, "code": code}])  # warm up (page cache)
        rate = _drain(bus, [{"language": lang, "code": code}] * LANG_JOBS)
        bare = _bare(_bare_command(lang, code), n, LANG_JOBS)
        rows += [(f"genesis: {lang} hello jobs/s end to end ({n} slots, {LANG_JOBS} jobs)",
                  f"{rate:.2f} ({rate / bare:.2f}x bare)", "-"),
                 (f"genesis: bare {what} runs/s, same parallelism", f"{bare:.2f}", "baseline")]
    return rows


def _throughput(s) -> list[tuple[str, str, str]]:
    from orchestrator.genesis.worker import concurrency, make

    _progress("starting the genesis worker (sandbox check)")
    w = make(s)
    sup = Supervisor([w], grace_s=5)
    sup.start()
    bus = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="bench", pool_size=2)
    n = concurrency()
    try:
        return _python_rows(bus, _Cpu(s), n) + _compiled_rows(bus, n)
    finally:
        bus.close()
        sup.request_stop()
        sup.shutdown()


def run() -> list[tuple[str, str, str]]:
    s = ready()
    return _start_overhead() + _throughput(s)
