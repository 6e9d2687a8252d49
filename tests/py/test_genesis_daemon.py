"""`orchestrator daemon --only genesis` as a subprocess: kill -9 while it holds jobs -> every job gets exactly
one result after the visibility timeout; SIGTERM finishes in-flight jobs and exits 0; a missing sandbox
refuses to start; GENESIS_SANDBOX=none warns."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from genesis_tools import forget_genesis_heartbeats, one_each, results, submit

from helpers import ROOT, run_cli
from orchestrator.infra.db import connect, owner_conninfo

ENV = {"GENESIS_CONCURRENCY": "4", "GENESIS_LEASE_MARGIN_S": "1", "SHARED_QUEUE_VT_S": "2",
       "SHARED_QUEUE_POLL_MS": "200", "ORCHESTRATOR_HEARTBEAT_S": "60"}


@pytest.fixture(scope="module", autouse=True)
def _no_heartbeats_left_behind(s):
    from datetime import UTC, datetime

    since = datetime.now(UTC)
    yield
    forget_genesis_heartbeats(s, since)


def daemon(log_path, **extra) -> subprocess.Popen:
    fh = open(log_path, "a")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "genesis", "--grace", "10"],
                            cwd=ROOT, env={**os.environ, **ENV, **extra}, stdout=fh, stderr=fh)


def executions(s, ids) -> dict[str, dict]:
    with connect(owner_conninfo(s, "genesis")) as c:
        rows = c.execute("SELECT request_id, status, runs, result FROM genesis.executions WHERE request_id = ANY(%s)",
                         (ids,)).fetchall()
    return {r["request_id"]: r for r in rows}


def test_kill_9_while_holding_jobs_gives_every_job_exactly_one_result(s, bus_for, clean_queues, tmp_path):
    sing = bus_for("svc_singularity")
    log = tmp_path / "daemon.log"
    quick = submit(sing, [{"language": "python", "code": f"print('quick {i}')"} for i in range(4)])
    p = daemon(log)
    try:
        one_each(results(sing, quick, 30), quick)
        slow = submit(sing, [{"language": "python", "code": f"import time; time.sleep(3); print('slow {i}')",
                              "timeout_s": 5} for i in range(8)])
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if sum(r["status"] == "running" for r in executions(s, slow).values()) >= 4:
                break
            time.sleep(0.05)
        before = executions(s, quick + slow)
        assert sum(r["status"] == "running" for r in before.values()) >= 4, log.read_text()
    finally:
        p.kill()
        p.wait(10)
    base = 600000 + 64 * (p.pid % 4096)  # the killed daemon's job uids (GENESIS_UID_BASE unset)
    end = time.monotonic() + 1.5  # before the cut-off jobs (3 s sleeps) would end by themselves
    while _procs_of_uids(range(base, base + 4)) and time.monotonic() < end:
        time.sleep(0.05)
    assert _procs_of_uids(range(base, base + 4)) == [], "sandboxed jobs outlived their kill -9'd worker"
    p2 = daemon(log)
    try:
        got = results(sing, slow, 40)
        time.sleep(2.5)  # past another visibility timeout: any duplicate would show up now
        for m in _drain(sing):
            got.setdefault(m["request_id"], []).append(m)
        rs = one_each(got, slow)
        assert sorted(r["output"] for r in rs.values()) == sorted(f"slow {i}\n" for i in range(8))
    finally:
        p2.send_signal(signal.SIGTERM)
        assert p2.wait(30) == 0, log.read_text()
    after = executions(s, quick + slow)
    assert all(r["status"] == "finished" for r in after.values())
    for rid in quick:  # finished before the kill: never ran again, result unchanged
        assert after[rid]["runs"] == 1 and after[rid]["result"] == before[rid]["result"]
    rerun = [rid for rid in slow if after[rid]["runs"] > 1]
    assert all(before[rid]["status"] == "running" for rid in rerun), "only jobs cut off by the kill ran again"
    assert all(after[rid]["runs"] <= 2 for rid in slow)


def _procs_of_uids(uids) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:  # zombies are dead (reaped whenever this machine's pid 1 gets to it)
                with open(f"/proc/{pid}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
                if os.stat(f"/proc/{pid}").st_uid in uids and state != "Z":
                    out.append(int(pid))
            except OSError:
                pass
    return out


def _drain(bus) -> list[dict]:
    out = []
    while True:
        msgs = bus.read("job_results", 100)
        if not msgs:
            return out
        for m in msgs:
            out.append(m.body)
            bus.ack(m)


def test_sigterm_finishes_the_running_job_and_exits_0(s, bus_for, clean_queues, tmp_path, sq_owner):
    sing = bus_for("svc_singularity")
    log = tmp_path / "daemon.log"
    p = daemon(log)
    try:
        warm = submit(sing, [{"language": "python", "code": "print(1)"}])
        results(sing, warm, 30)
        ids = submit(sing, [{"language": "python", "code": "import time; time.sleep(1); print('finished')"}])
        end = time.monotonic() + 10
        while time.monotonic() < end and not executions(s, ids):
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
    assert rc == 0 and "daemon stopped" in log.read_text(), log.read_text()
    beats = sq_owner.execute("SELECT message FROM pgmq.q_instance_heartbeat WHERE message->>'service' = 'genesis' "
                             "ORDER BY msg_id DESC LIMIT 1").fetchall()
    assert beats and beats[0]["message"]["stats"]["sandbox"] == "bwrap", "the genesis worker sends heartbeats"
    held = beats[0]["message"]["stats"]["confinement"]  # which memory bound, seccomp, user namespaces
    assert held["seccomp"] is True and held["userns"] == "disabled" and held["cgroup"] in ("v1", "v2", "none")
    assert one_each(results(sing, ids, 5), ids)[ids[0]]["output"] == "finished\n"


def test_no_bwrap_refuses_to_start_and_none_warns_loudly(tmp_path):
    r = run_cli("daemon", "--only", "genesis", env={"GENESIS_BWRAP": str(tmp_path / "bwrap")}, timeout=60)
    assert r.returncode != 0 and "bubblewrap (bwrap) is not installed" in r.stderr + r.stdout
    r = run_cli("genesis", "check", env={"GENESIS_BWRAP": str(tmp_path / "bwrap")}, timeout=60)
    assert r.returncode == 1 and "apt-get install bubblewrap" in r.stderr
    r = run_cli("genesis", "run", "-", "--json", env={"GENESIS_SANDBOX": "none"}, input="print('unsafe but ran')",
                timeout=60)
    assert "WITHOUT bubblewrap isolation" in r.stderr and "unsafe but ran" in r.stdout, r.stderr
    r = run_cli("genesis", "check", timeout=60)
    assert r.returncode == 0 and "sandbox bwrap: ok" in r.stdout, r.stderr


def test_a_non_root_worker_runs_jobs_as_itself_with_the_same_limits():
    """Started as an ordinary user (here: nobody), the sandbox still isolates and limits the job."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    code = ("from orchestrator.genesis.sandbox import Sandbox, Limits\n"
            "sb = Sandbox(slots=1)\n"
            "r = sb.run('import os; print(os.getuid(), sorted(os.listdir(\"/\")))', 'python', 'run', Limits())\n"
            "b = sb.run('import os\\nwhile True: os.fork()', 'python', 'run', Limits(timeout_s=5, processes=32))\n"
            "print(sb.root, r['stdout'].strip(), b['killed_reason'], b['exceeded'])\n")
    # nobody may not enter the checkout (CI clones into a 0700 folder): give it a readable copy of the package
    pkg = Path(tempfile.mkdtemp(prefix="genesis-nonroot-"))
    try:
        shutil.copytree(ROOT / "orchestrator", pkg / "orchestrator",
                        ignore=shutil.ignore_patterns("__pycache__", "web", "templates"))
        import pyseccomp  # the one module the sandbox needs from the venv (it builds the seccomp filter)

        shutil.copy(pyseccomp.__file__, pkg)
        for d in (pkg, *pkg.rglob("*")):
            d.chmod(0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                            code], env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pkg), "GENESIS_RUFF": "/nonexistent",
                                        "PYTHONDONTWRITEBYTECODE": "1"},
                           capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(pkg, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "65534", "['bin',", "'dev',", "'lib',", "'lib64',", "'proc',", "'usr',",
                                "'work']", "resource_exceeded", "processes"], r.stdout


def test_no_orphans_when_jobs_are_killed_mid_setup():
    """Jobs timed out within 50 ms (often while bwrap is still setting up), then the parent killed -9 while
    spawning more: the lifeline leaves no sandboxed process behind."""
    base = 720000 + 8 * (os.getpid() % 1000)
    code = ("import threading, time\n"
            "from orchestrator.genesis.sandbox import Sandbox, Limits\n"
            f"sb = Sandbox(slots=4, uid_base={base})\n"
            "def loop():\n"
            "    while True:\n"
            "        sb.run('import time; time.sleep(60)', 'python', 'run', Limits(timeout_s=0.05))\n"
            "for _ in range(4):\n"
            "    threading.Thread(target=loop, daemon=True).start()\n"
            "time.sleep(60)\n")
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        time.sleep(1.5)
        p.kill()
        p.wait(10)
        end = time.monotonic() + 1.5
        while _procs_of_uids(range(base, base + 4)) and time.monotonic() < end:
            time.sleep(0.05)
        assert _procs_of_uids(range(base, base + 4)) == [], "a sandboxed process outlived its job and worker"
