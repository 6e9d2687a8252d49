"""The sandbox's confinement against the holes a security review found, through the real sandbox (bwrap, the
job cgroup, the seccomp filter): memory held in memfds, /dev/shm and tmpfs is bounded for the whole job,
a job cannot forge its peak memory nor see any descriptor but 0, 1, 2, kernel attack surface is refused
with EPERM, and without a cgroup (GENESIS_CGROUP=off) memfd is denied and /dev/shm capped."""

from __future__ import annotations

import json
import os
import platform

import pytest

from helpers import run_cli
from orchestrator.genesis.sandbox import Limits, Sandbox

MB = 1024

# 56 memfds of 16 MB in one process: 896 MB that RLIMIT_AS never sees
MEMFD_BOMB = """import os
held = []
for i in range(56):
    fd = os.memfd_create(f"m{i}")
    os.write(fd, b"x" * (16 << 20))
    held.append(fd)
print("held", 16 * len(held), "MB")
"""
# three children holding 128 MB of memfds each: every one alone is under memory_mb=256, together they are not
CHILDREN_MEMFD = """import os, sys, time
kids = []
for k in range(3):
    pid = os.fork()
    if pid == 0:
        held = []
        for i in range(8):
            fd = os.memfd_create(f"c{k}-{i}")
            os.write(fd, b"x" * (16 << 20))
            held.append(fd)
        print("child held", 16 * len(held), "MB", flush=True)
        time.sleep(1)
        os._exit(0)
    kids.append(pid)
sys.exit(1 if any(os.waitpid(p, 0)[1] for p in kids) else 0)
"""
# inherited descriptors 3..20 (whatever they are) get a forged "peak"; then what the job sees
FORGE = """import os
for fd in range(3, 21):
    try:
        os.lseek(fd, 0, 0)
    except OSError:
        pass
    try:
        os.write(fd, b"999999999\\n")
    except OSError:
        pass
seen = []
for n in os.listdir("/proc/self/fd"):
    try:
        os.readlink("/proc/self/fd/" + n)
        seen.append(int(n))
    except OSError:
        pass  # the descriptor listdir itself used
print(sorted(seen))
"""
# x86_64 and aarch64 numbers of the calls glibc has no wrapper for
NR = {"x86_64": {"keyctl": 250, "bpf": 321, "perf_event_open": 298},
      "aarch64": {"keyctl": 219, "bpf": 280, "perf_event_open": 241}}
SECCOMP_PROBE = """import ctypes, errno, os, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
def res(r):
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
out = {"unshare_user": res(libc.unshare(0x10000000)),
       "unshare_mount": res(libc.unshare(0x00020000)),
       "mount": res(libc.mount(b"none", b"/work", b"tmpfs", 0, None))}
for name, nr in NR.items():
    out[name] = res(libc.syscall(nr, 0, 0, 0, 0, 0))
pid = os.fork()
if pid == 0:
    time.sleep(5)
    os._exit(0)
out["ptrace_attach"] = res(libc.ptrace(16, pid, None, None))  # PTRACE_ATTACH
os.kill(pid, 9)
os.waitpid(pid, 0)
u = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True)
out["unshare_cmd"] = u.stderr.strip()
out["fork_thread"] = "ok"
import threading
t = threading.Thread(target=lambda: None)
t.start()
t.join()
print(out)
"""


@pytest.fixture(scope="module")
def boxed():
    """A sandbox with a job cgroup (this host: cgroup v1 as root)."""
    if os.geteuid() != 0:
        pytest.skip("job cgroups need root (or a delegated cgroup v2) here")
    sb = Sandbox(slots=2)
    assert sb.cgroups is not None, f"no job cgroup although root: {sb.cgroup_reason}"
    return sb


@pytest.fixture
def fallback(monkeypatch):
    monkeypatch.setenv("GENESIS_CGROUP", "off")
    sb = Sandbox(slots=1)
    assert sb.cgroups is None and sb.confinement()["memfd"] == "denied"
    return sb


def _no_job_cgroups_left(sb: Sandbox) -> None:
    for d in sb.cgroups.dirs:
        assert [n for n in os.listdir(d) if n.startswith("job-")] == [], f"a job cgroup outlived its job in {d}"


def test_memfd_bomb_in_one_process_is_stopped_at_memory_mb(boxed):
    r = boxed.run(MEMFD_BOMB, "python", "run", Limits(memory_mb=256))
    assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "memory", r
    assert "held" not in r["stdout"], "896 MB of memfds were held under memory_mb=256"
    assert "memory_mb=256" in r["error"]
    # the job's peak, measured by its cgroup (memfd pages included): at the bound, never near 900 MB
    assert 200 * MB < r["peak_memory_kb"] <= 256 * MB * 1.02, r["peak_memory_kb"]
    assert r["confinement"]["cgroup"] in ("v1", "v2") and r["confinement"]["memory"] == "whole job"
    _no_job_cgroups_left(boxed)


def test_memfd_held_by_three_children_counts_for_the_whole_job(boxed):
    r = boxed.run(CHILDREN_MEMFD, "python", "run", Limits(memory_mb=256, timeout_s=20))
    assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "memory", r
    assert r["stdout"].count("child held") < 3, "3 x 128 MB of memfds were held under memory_mb=256"
    assert r["peak_memory_kb"] <= 256 * MB * 1.02, r["peak_memory_kb"]
    _no_job_cgroups_left(boxed)


def test_dev_shm_and_tmpfs_pages_count_towards_the_job(boxed):
    held = ("import os\n"
            "open('/dev/shm/a', 'wb').write(b'x' * (3 << 20))\n"
            "for i in range(4):\n"
            "    open(f'/work/f{i}', 'wb').write(b'x' * (10 << 20))\n"
            "print('wrote')\n")
    r = boxed.run(held, "python", "run", Limits())
    assert r["exit_code"] == 0 and r["stdout"] == "wrote\n", r
    assert r["peak_memory_kb"] >= 43 * MB, "3 MB in /dev/shm and 40 MB in /work are the job's memory"
    # /work may be bigger than memory_mb: the tmpfs pages still count, and the job stops at memory_mb
    fill = ("for i in range(12):\n"
            "    open(f'/work/f{i}', 'wb').write(b'x' * (10 << 20))\n"
            "print('wrote 120 MB')\n")
    r = boxed.run(fill, "python", "run", Limits(memory_mb=64, tmpfs_mb=256))
    assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "memory", r
    assert "wrote" not in r["stdout"] and r["peak_memory_kb"] <= 64 * MB * 1.05


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
def test_inherited_descriptors_cannot_forge_peak_memory(mode, request):
    sb = request.getfixturevalue("boxed" if mode == "cgroup" else "fallback")
    r = sb.run(FORGE, "python", "run", Limits())
    assert r["exit_code"] == 0, r
    assert r["stdout"] == "[0, 1, 2]\n", f"the job sees descriptors beyond stdin/stdout/stderr: {r['stdout']}"
    assert 0 < r["peak_memory_kb"] < 100_000, f"the job set its own peak memory: {r['peak_memory_kb']}"


def test_seccomp_refuses_namespaces_mounts_keyrings_bpf_perf_and_ptrace(boxed):
    nr = NR.get(platform.machine())
    if nr is None:
        pytest.skip(f"syscall numbers for {platform.machine()} not listed")
    r = boxed.run(f"NR = {nr!r}\n" + SECCOMP_PROBE, "python", "run", Limits())
    assert r["exit_code"] == 0, r
    out = eval(r["stdout"])  # noqa: S307 - the dict the probe printed
    for call in ("unshare_user", "unshare_mount", "mount", "keyctl", "bpf", "perf_event_open", "ptrace_attach"):
        assert out[call] == "EPERM", (call, out)
    assert "Operation not permitted" in out["unshare_cmd"], out
    assert out["fork_thread"] == "ok"
    assert r["confinement"]["seccomp"] is True and r["confinement"]["userns"] == "disabled"


def test_languages_and_tools_still_run_under_the_filter(boxed, fallback):
    for sb in (boxed, fallback):
        for lang, mode, code in (("javascript", "run", "console.log('hello')"), ("bash", "run", "echo hello"),
                                 ("bash", "lint", "echo hello\n"), ("python", "lint", "print('hello')\n")):
            r = sb.run(code, lang, mode, Limits())
            assert r["exit_code"] == 0 and r["error"] is None, (lang, mode, sb.confinement(), r)


def test_without_a_cgroup_memfd_and_sysv_shm_are_refused_and_dev_shm_is_capped(fallback):
    code = ("import ctypes, errno, os\n"
            "try:\n"
            "    os.memfd_create('x')\n"
            "    print('memfd ok')\n"
            "except OSError as e:\n"
            "    print('memfd', errno.errorcode[e.errno])\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.shmget(0, 64 << 20, 0o1600)\n"  # IPC_PRIVATE, IPC_CREAT | 0600
            "print('shmget', 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])\n"
            "st = os.statvfs('/dev/shm')\n"
            "print('shm_mb', st.f_blocks * st.f_frsize >> 20)\n")
    r = fallback.run(code, "python", "run", Limits())
    assert r["stdout"].splitlines() == ["memfd EPERM", "shmget EPERM", "shm_mb 4"], r
    assert r["confinement"] == {"cgroup": "none", "memory": "per process", "seccomp": True, "userns": "disabled",
                                "memfd": "denied"}
    r = fallback.run(MEMFD_BOMB, "python", "run", Limits())
    assert r["exit_code"] == 1 and "Operation not permitted" in r["stderr"] and "held" not in r["stdout"], r
    r = fallback.run("i = 0\nwhile True:\n    open(f'/dev/shm/f{i}', 'wb').write(b'0' * 1_000_000); i += 1",
                     "python", "run", Limits())
    assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "disk", r


def test_genesis_check_says_what_is_in_force():
    r = run_cli("genesis", "check", timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sandbox bwrap: ok" in out
    if os.geteuid() == 0:
        assert "memory: cgroup v1 per job" in out or "memory: cgroup v2 per job" in out, out
        assert "memfd counted" in out
    assert "seccomp: on" in out and "unshare" in out and "ptrace" in out
    assert "user namespaces: disabled" in out
    assert "descriptors: only 0, 1, 2" in out
    r = run_cli("genesis", "check", env={"GENESIS_CGROUP": "off"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "memory: NO cgroup (GENESIS_CGROUP=off)" in r.stdout, r.stdout
    assert "memfd_create and System V shared memory denied, /dev/shm 4 MB" in r.stdout
    assert "warning:" in r.stderr and "For a whole-job memory bound:" in r.stderr, r.stderr
    r = run_cli("genesis", "check", "--json", timeout=60)
    got = json.loads(r.stdout)
    assert got["confinement"]["seccomp"] is True and got["probe"]["fds"] == [0, 1, 2]
    r = run_cli("genesis", "check", env={"GENESIS_CGROUP": "sometimes"}, timeout=60)
    assert r.returncode == 1 and "GENESIS_CGROUP='sometimes' is not known; use auto" in r.stderr


def test_cgroup_files_are_read_the_same_in_v1_and_v2(tmp_path):
    """v2 is not mounted with a memory controller on the test machines: its file formats are checked here."""
    from orchestrator.genesis.sandbox import cgroup

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "memory.max_usage_in_bytes").write_text("268435456\n")
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (v2 / "memory.peak").write_text("134217728\n")
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroup.Job("v1", (str(v1),)).peak_kb() == 262144 and cgroup.Job("v1", (str(v1),)).oom_kills() == 2
    assert cgroup.Job("v2", (str(v2),)).peak_kb() == 131072 and cgroup.Job("v2", (str(v2),)).oom_kills() == 1
    # a worker inside a container's cgroup namespace: its path is relative to the mount's root
    assert cgroup._under("/sys/fs/cgroup", "/", "/system.slice/w.service") == "/sys/fs/cgroup/system.slice/w.service"
    assert cgroup._under("/sys/fs/cgroup/memory", "/docker/abc", "/docker/abc/x") == "/sys/fs/cgroup/memory/x"
    assert cgroup._under("/sys/fs/cgroup/memory", "/docker/abc", "/other") is None
