"""A cgroup per sandboxed job: a memory bound for the whole job that counts shmem, memfds and tmpfs pages
(which RLIMIT_AS does not), a pids bound, a peak the job cannot write, and a way to kill all of it.

cgroup v1 (memory and pids controllers mounted, writable: root) or a delegated cgroup v2 hierarchy. Each
worker process keeps its jobs under `genesis-<pid>` inside its own cgroup of each controller (so limits set
on the worker's cgroup still hold), one `job-<n>` per job, removed when the job ends.
GENESIS_CGROUP: `auto` (default: a cgroup where the host allows, else the no-cgroup fallback),
`off` (the fallback: memfd_create and System V shared memory denied, /dev/shm capped), `required`
(refuse to run code without a cgroup).
"""

from __future__ import annotations

import atexit
import errno
import itertools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

MODES = ("auto", "off", "required")
FIX = ("run the worker as root on a host with the cgroup v1 memory and pids controllers mounted "
       "(/sys/fs/cgroup/memory, /sys/fs/cgroup/pids), or in a cgroup v2 subtree delegated to it with the memory "
       "and pids controllers (systemd: Delegate=yes), where it is the only process")


class CgroupUnavailable(RuntimeError):
    """GENESIS_CGROUP=required but no usable cgroup; or a bad GENESIS_CGROUP value. The message has the fix."""


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(fstype, root, mountpoint, super options) of every cgroup mount, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            f, r = left.split(), right.split()
            if r and r[0] in ("cgroup", "cgroup2"):
                out.append((r[0], _unescape(f[3]), _unescape(f[4]), set(r[2].split(",")) if len(r) > 2 else set()))
    return out


def _unescape(p: str) -> str:
    return p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _own_paths() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _under(mountpoint: str, root: str, path: str) -> str | None:
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None  # our cgroup is not visible through this mount
    rel = path[len(root):] if root != "/" else path
    return os.path.join(mountpoint, rel.lstrip("/"))


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


@dataclass
class Probe:
    version: str           # v1, v2 or none
    reason: str = ""       # why none
    dirs: tuple[str, ...] = ()  # the worker's genesis-<pid> directory per controller (memory first)


_found: dict[int, Hierarchy | Probe] = {}  # per process id (a forked child looks again)
_found_lock = threading.Lock()
_seq = itertools.count(1)


def hierarchy() -> Hierarchy | Probe:
    """This process's job cgroups (found once), or a Probe saying why there are none."""
    with _found_lock:
        pid = os.getpid()
        if pid not in _found:
            _found[pid] = Hierarchy.detect()
            if isinstance(_found[pid], Hierarchy):
                atexit.register(_found[pid].close)
        return _found[pid]


class Hierarchy:
    """This worker's job cgroups: v1 (memory dir, pids dir) or v2 (one dir), each a genesis-<pid>."""

    def __init__(self, version: str, dirs: tuple[str, ...]):
        self.version, self.dirs = version, dirs

    # -- finding one ---------------------------------------------------------------------------
    @classmethod
    def detect(cls) -> Hierarchy | Probe:
        try:
            mounts, own = _mounts(), _own_paths()
        except OSError as e:
            return Probe("none", f"cannot read /proc/self/mountinfo or /proc/self/cgroup ({e})")
        reasons = []
        v1 = {c: m for m in mounts if m[0] == "cgroup" for c in ("memory", "pids") if c in m[3]}
        if "memory" in v1 and "pids" in v1:
            got = cls._v1(v1, own)
            if isinstance(got, Hierarchy):
                return got
            reasons.append(got)
        elif "memory" in v1 or "pids" in v1:
            reasons.append("cgroup v1 has only the " + ("memory" if "memory" in v1 else "pids") + " controller")
        v2 = [m for m in mounts if m[0] == "cgroup2"]
        if v2 and "" in own:
            got = cls._v2(v2, own[""])
            if isinstance(got, Hierarchy):
                return got
            reasons.append(got)
        if not v1 and not v2:
            reasons.append("no cgroup filesystem is mounted")
        return Probe("none", "; ".join(reasons))

    @classmethod
    def _v1(cls, v1: dict, own: dict) -> Hierarchy | str:
        dirs = []
        for c in ("memory", "pids"):
            _t, root, mnt, _o = v1[c]
            base = _under(mnt, root, own.get(c, "/"))
            if base is None:
                return f"cgroup v1: this process's {c} cgroup is not under {mnt}"
            d = os.path.join(base, f"genesis-{os.getpid()}")
            try:
                _sweep(base)
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                return f"cgroup v1: cannot create {d} ({e.strerror})"
            dirs.append(d)
        h = cls("v1", tuple(dirs))
        try:  # one real job cgroup, to be sure the limits can be written
            h.job(64 * 1024 * 1024, 8).remove()
        except OSError as e:
            h.close()
            return f"cgroup v1: cannot set limits in {dirs[0]} ({e.strerror})"
        return h

    @classmethod
    def _v2(cls, v2: list, own: str) -> Hierarchy | str:
        for _t, root, mnt, _o in v2:
            base = _under(mnt, root, own)
            if base is None or not os.path.isdir(base):
                continue
            try:
                have = _read(os.path.join(base, "cgroup.controllers")).split()
            except OSError:
                continue
            if not {"memory", "pids"} <= set(have):
                return f"cgroup v2 at {base} does not offer the memory and pids controllers (it has: " \
                       f"{' '.join(have) or 'none'})"
            try:
                _enable_v2(base)
                _sweep(base)
                d = os.path.join(base, f"genesis-{os.getpid()}")
                os.makedirs(d, exist_ok=True)
                _write(os.path.join(d, "cgroup.subtree_control"), "+memory +pids")
            except OSError as e:
                return f"cgroup v2 at {base} is not delegated to this process ({e.strerror})"
            h = cls("v2", (d,))
            try:
                h.job(64 * 1024 * 1024, 8).remove()
            except OSError as e:
                h.close()
                return f"cgroup v2: cannot set limits under {d} ({e.strerror})"
            return h
        return "cgroup v2: this process's cgroup is not under a cgroup2 mount"

    # -- jobs ----------------------------------------------------------------------------------
    def job(self, memory_bytes: int, pids: int) -> Job:
        """A fresh cgroup (per controller) with the limits set; remove() it after the job."""
        name = f"job-{next(_seq)}"  # itertools.count is atomic under the GIL
        dirs = tuple(os.path.join(d, name) for d in self.dirs)
        made = []
        try:
            for d in dirs:
                os.mkdir(d)
                made.append(d)
            if self.version == "v1":
                mem, pid = dirs
                _write(f"{mem}/memory.limit_in_bytes", str(memory_bytes))
                if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):  # no swapping past the bound either
                    _write(f"{mem}/memory.memsw.limit_in_bytes", str(memory_bytes))
                _write(f"{pid}/pids.max", str(pids))
            else:
                (d,) = dirs
                _write(f"{d}/memory.max", str(memory_bytes))
                if os.path.exists(f"{d}/memory.swap.max"):
                    _write(f"{d}/memory.swap.max", "0")
                _write(f"{d}/pids.max", str(pids))
        except OSError:
            for d in reversed(made):
                _rmdir(d)
            raise
        return Job(self.version, dirs)

    def close(self) -> None:
        for d in self.dirs:
            _remove_tree(d)


class Job:
    def __init__(self, version: str, dirs: tuple[str, ...]):
        self.version, self.dirs = version, dirs

    def add(self, pid: int) -> None:
        """Move PID into the job's cgroups (its later children are born there)."""
        for d in self.dirs:
            _write(f"{d}/cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in _read(f"{self.dirs[0]}/cgroup.procs").split()]
        except OSError:
            return []

    def peak_kb(self) -> int:
        """The job's peak memory (anonymous, page cache, shmem, memfd, tmpfs), in KB."""
        f = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int(_read(f"{self.dirs[0]}/{f}")) // 1024
        except (OSError, ValueError):
            return 0

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the job's memory bound."""
        f = "memory.oom_control" if self.version == "v1" else "memory.events"
        try:
            for line in _read(f"{self.dirs[0]}/{f}").splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def kill(self) -> None:
        """SIGKILL everything in the job's cgroup."""
        if self.version == "v2" and os.path.exists(f"{self.dirs[0]}/cgroup.kill"):
            try:
                _write(f"{self.dirs[0]}/cgroup.kill", "1")
                return
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self) -> None:
        """Kill what is left and remove the cgroups (a few tries while the last processes exit). Never raises:
        a cgroup left behind is logged and removed by a later worker start."""
        for d in reversed(self.dirs):
            try:
                if not _rmdir(d):
                    self.kill()
                    end = time.monotonic() + 2.0
                    while not _rmdir(d) and time.monotonic() < end:
                        time.sleep(0.01)
                if os.path.isdir(d):
                    log.warning("genesis: cannot remove job cgroup %s (still busy); a later worker start "
                                "removes it", d)
            except OSError as e:
                log.warning("genesis: cannot remove job cgroup %s (%s); a later worker start removes it",
                            d, e.strerror)


def _rmdir(d: str) -> bool:
    try:
        os.rmdir(d)
        return True
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise


def _remove_tree(d: str) -> None:
    """Remove a genesis-<pid> directory and its job cgroups, killing what is left in them."""
    try:
        names = [n for n in os.listdir(d) if n.startswith("job-")]
    except OSError:
        return
    for n in names:
        Job("v2" if os.path.exists(os.path.join(d, n, "cgroup.events")) else "v1", (os.path.join(d, n),)).remove()
    try:
        os.rmdir(d)
    except OSError as e:
        log.debug("genesis: %s stays (%s)", d, e.strerror)


def _sweep(base: str) -> None:
    """Remove genesis-<pid> directories under BASE whose worker is gone (killed before it could clean up)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for n in names:
        if n.startswith("genesis-") and n[8:].isdigit() and int(n[8:]) != os.getpid():
            try:
                os.kill(int(n[8:]), 0)
                continue  # that worker still runs (or runs as another user)
            except ProcessLookupError:
                _remove_tree(os.path.join(base, n))
            except PermissionError:
                continue


def _enable_v2(base: str) -> None:
    """Make sure BASE hands memory and pids down to its children. If BASE holds only this process (a
    delegated unit), this process first moves into a leaf of its own, as the no-internal-processes rule
    of cgroup v2 requires."""
    ctl = os.path.join(base, "cgroup.subtree_control")
    if {"memory", "pids"} <= set(_read(ctl).split()):
        return
    try:
        _write(ctl, "+memory +pids")
        return
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
    procs = _read(os.path.join(base, "cgroup.procs")).split()
    if procs != [str(os.getpid())]:
        raise OSError(errno.EBUSY, f"other processes share its cgroup ({len(procs)} in {base})")
    leaf = os.path.join(base, "genesis-worker")
    os.makedirs(leaf, exist_ok=True)
    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    _write(ctl, "+memory +pids")
