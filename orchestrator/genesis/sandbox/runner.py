"""Run one piece of code in bubblewrap: no network, no host files, no environment, rlimits, a cgroup per job
(memory of the whole job, shmem and memfds included, and processes), a seccomp filter, no inherited
descriptor but stdin/stdout/stderr, a wall-clock timeout that kills the whole tree, output capped with a
visible marker.

Started as root, each job first drops to an unprivileged uid of its own (GENESIS_UID_BASE + slot), so
that RLIMIT_NPROC applies (root ignores it) and concurrent jobs never share a process budget.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.genesis.sandbox import cgroup, seccomp
from orchestrator.genesis.sandbox.languages import Command, Unsupported, command
from orchestrator.genesis.sandbox.limits import Limits
from orchestrator.genesis.settings import GenesisSettings

log = logging.getLogger(__name__)

# The sandbox's pid 1 (bash). It first sets the job's rlimits (ulimit, a builtin: no prlimit process),
# then waits for "go" on the lifeline pipe: the worker sends it once the sandbox is in its job cgroup
# (nothing of the job runs before; EOF instead of go: it ends). Then it closes every descriptor but 0, 1,
# 2 and the lifeline (whatever a tool on the way leaked, e.g. GNU time's output: the job could reach them
# through /proc/1/fd). Two children: a watcher that ends when the lifeline reaches EOF (the worker closed
# it at a timeout, or died), and the program, with bash's own variables and the lifeline removed (exec in
# a ( ) subshell: bash then neither re-creates SHLVL nor adds `_`; no env process).
# Whichever ends first, pid 1 exits (with the program's status if it was the program; else after killing
# and reaping the program, so that its peak memory is still counted) and the kernel kills everything left
# in the namespace. So no process outlives its job even if the worker dies while bwrap sets the sandbox
# up; and the program is not pid 1, which the kernel would shield from SIGXCPU and the CPU limit's SIGKILL.
# The limits are in force before any code of the job runs, and only lowered: a process in the sandbox's
# user namespace cannot raise a hard limit again (that needs CAP_SYS_RESOURCE in the host's namespace).
INIT = ('ulimit -t {cpu_hard} -v {as_kb} -u {nproc} -f {fsize_kb} -n {nofile} -c 0 && ulimit -S -t {cpu} '
        '|| exit 126; '
        'read -r -u {fd} go && [ "$go" = go ] || exit 125; '
        'for f in /proc/self/fd/*; do f=${{f##*/}}; case $f in 0|1|2|{fd}) ;; *) eval "exec $f>&-";; esac; done; '
        '{{ read -r -u {fd} _; }} & ( unset -v SHLVL OLDPWD; exec "$@" {fd}<&- ) & c=$!; '
        'wait -n -p done; r=$?; [ "$done" = "$c" ] && exit $r; kill -9 $c; wait $c; exit 137')
# Only the interpreters, tools and their libraries: not /usr/local, /usr/share, /usr/src, /usr/include.
USR_BINDS = [a for d in ("/usr/bin", "/usr/lib", "/usr/lib64") if os.path.isdir(d) for a in ("--ro-bind", d, d)]
SHM_MB = 4  # /dev/shm inside the sandbox (the rest of /dev is read-only)
UNSAFE_WARNING = ("GENESIS_SANDBOX=none: submitted code runs WITHOUT bubblewrap isolation (it can read host "
                  "files and reach the network); only rlimits, a temp dir and the timeout apply. Unset "
                  "GENESIS_SANDBOX to isolate again.")

# What `check` runs in the sandbox: "ok", then what the job sees (descriptors, user namespaces, memfd, /dev/shm).
PROBE = """import ctypes, errno, json, os
print('ok')
def fds():
    out = []
    for n in os.listdir('/proc/self/fd'):
        try:
            os.readlink('/proc/self/fd/' + n)
            out.append(int(n))
        except OSError:
            pass  # the descriptor listdir itself used
    return sorted(out)
libc = ctypes.CDLL(None, use_errno=True)
userns = 'ok' if libc.unshare(0x10000000) == 0 else errno.errorcode.get(ctypes.get_errno(), '?')
try:
    os.close(os.memfd_create('probe'))
    memfd = 'ok'
except OSError as e:
    memfd = errno.errorcode.get(e.errno, '?')
st = os.statvfs('/dev/shm')
print(json.dumps({'fds': fds(), 'userns': userns, 'memfd': memfd, 'shm_mb': st.f_blocks * st.f_frsize // 2**20}))
"""

# Messages a runtime prints when a limit bites: (text in lower case, which limit).
SIGNATURES = (
    ("memoryerror", "memory"), ("cannot allocate memory", "memory"), ("out of memory", "memory"),
    ("bad_alloc", "memory"), ("allocation failed", "memory"),
    ("memory allocation of", "memory"), ("bytes of memory", "memory"),  # Rust's alloc failure, the Erlang VM's
    ("failed to create scheduler thread", "processes"), ("failed to create aux thread", "processes"),
    ("failed to create dirty", "processes"), (": eagain", "processes"),  # the Erlang VM's threads and ports
    ("resource temporarily unavailable", "processes"), ("cannot fork", "processes"),
    ("fork: retry", "processes"), ("can't start new thread", "processes"),
    ("no space left on device", "disk"), ("file too large", "file_size"), ("too many open files", "open_files"),
)


class SandboxUnavailable(RuntimeError):
    """bwrap or user namespaces are missing: untrusted code is refused; the message says how to fix it."""


class SlotsBusy(RuntimeError):
    """No sandbox slot freed within the time asked for (Sandbox.slot)."""


@dataclass(frozen=True)
class Slot:
    """A sandbox slot held by a caller: the uid its jobs run as (None: the worker's own, when not root)."""

    uid: int | None


class Sandbox:
    """Runs jobs; SLOTS uids are handed out so that at most SLOTS jobs run at once, each under its own uid."""

    def __init__(self, slots: int = 1, uid_base: int | None = None, kind: str | None = None,
                 settings: GenesisSettings | None = None):
        self.settings = settings or GenesisSettings.from_env()
        self.kind = kind or self.settings.sandbox
        self.root = os.geteuid() == 0
        base = uid_base if uid_base is not None else self.settings.uid_base  # 600000 + 64 * (pid % 4096) by default
        self.slots = max(1, slots)
        self._uids: queue.Queue[int | None] = queue.Queue()
        for i in range(self.slots):
            self._uids.put(base + i if self.root else None)
        self.bwrap = shutil.which(self.settings.bwrap) or ""
        self.prlimit = shutil.which("prlimit") or ""
        self.setpriv = shutil.which("setpriv") or ""
        self.time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else ""
        if not self.prlimit or not self.setpriv:
            raise SandboxUnavailable("prlimit or setpriv is missing (Debian package util-linux): they set the "
                                     "rlimits and drop to the job's uid")
        if self.kind == "none":
            log.warning(UNSAFE_WARNING)
        elif not self.bwrap:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed: apt-get install bubblewrap. Untrusted "
                                     "code is refused without it (GENESIS_SANDBOX=none disables isolation, unsafe)")
        # the job cgroups (memory of the whole job, pids), or why there are none
        self.cgroups: cgroup.Hierarchy | None = None
        self.cgroup_reason = "GENESIS_SANDBOX=none" if self.kind == "none" else ""
        self.cgroup_mode = self.settings.cgroup
        if self.kind == "bwrap":
            if self.cgroup_mode == "off":
                self.cgroup_reason = "GENESIS_CGROUP=off"
            else:
                got = cgroup.hierarchy()
                if isinstance(got, cgroup.Hierarchy):
                    self.cgroups = got
                else:
                    self.cgroup_reason = got.reason
                    if self.cgroup_mode == "required":
                        raise SandboxUnavailable(f"GENESIS_CGROUP=required but no cgroup can hold the jobs: "
                                                 f"{got.reason}. Fix: {cgroup.FIX}; or unset GENESIS_CGROUP to "
                                                 "run without one (memfd denied, memory bounded per process)")
            try:
                self.seccomp = seccomp.program(deny_memfd=self.cgroups is None)
            except seccomp.SeccompUnavailable as e:
                raise SandboxUnavailable(str(e)) from None
        if not self.time and self.cgroups is None:
            raise SandboxUnavailable("/usr/bin/time is missing (Debian package time): it measures peak memory "
                                     "when there is no job cgroup")

    def fallback_text(self) -> str:
        return (f"no cgroup for the jobs ({self.cgroup_reason}): memory_mb bounds each process's address space "
                f"only, so memfd_create and System V shared memory are denied and /dev/shm holds {SHM_MB} MB. "
                f"For a whole-job memory bound: {cgroup.FIX}")

    def confinement(self) -> dict:
        """What holds a job here (in every result and heartbeat)."""
        cg = self.cgroups.version if self.cgroups else "none"
        if self.kind == "none":
            return {"cgroup": "none", "memory": "per process", "seccomp": False, "userns": "allowed",
                    "memfd": "allowed"}
        return {"cgroup": cg, "memory": "whole job" if self.cgroups else "per process", "seccomp": True,
                "userns": "disabled", "memfd": "counted" if self.cgroups else "denied"}

    # -- health --------------------------------------------------------------------------------
    def check(self) -> dict:
        """Run a probe through the sandbox: SandboxUnavailable with the reason and the fix if it cannot run
        code, or if a protection that should hold does not (descriptors, nested user namespaces, memfd).
        Returns the probe's result with `probe` (what the job saw)."""
        r = self.run(PROBE, "python", "run", Limits(timeout_s=10))
        lines = r["stdout"].splitlines()
        if r["exit_code"] != 0 or not lines or lines[0] != "ok":
            detail = (r["stderr"] or r["error"] or "").strip()[-600:]
            hint = ""
            if "namespace" in detail or "Operation not permitted" in detail:
                hint = (" User namespaces look unavailable: enable them (sysctl kernel.unprivileged_userns_clone=1, "
                        "user.max_user_namespaces>0; in a container allow unshare/clone, e.g. "
                        "--security-opt seccomp=unconfined, or run with --privileged).")
            raise SandboxUnavailable(f"the sandbox cannot run code: {detail}.{hint} Untrusted code is refused "
                                     "until this works (GENESIS_SANDBOX=none disables isolation, unsafe)")
        import json

        probe = json.loads(lines[1])
        r["probe"] = probe
        if self.kind == "none":
            return r
        if probe["fds"] != [0, 1, 2]:
            raise SandboxUnavailable(f"the job inherits descriptors {probe['fds']} (only 0, 1, 2 are allowed): a "
                                     "tool on the way (bwrap, setpriv, prlimit, time) leaks them; check GENESIS_BWRAP "
                                     "and those tools' versions. Untrusted code is refused until only 0, 1, 2 reach it")
        if probe["userns"] != "EPERM":
            raise SandboxUnavailable(f"a job can create user namespaces (unshare(CLONE_NEWUSER) gave "
                                     f"{probe['userns']}): the seccomp filter or bwrap --disable-userns is not in "
                                     "force; bubblewrap >= 0.8 and a kernel with seccomp filters are needed")
        if self.cgroups is None and probe["memfd"] != "EPERM":
            raise SandboxUnavailable("memfd_create is allowed without a job cgroup: memory could grow past "
                                     "memory_mb unseen; the seccomp filter is not in force (needs a kernel with "
                                     "CONFIG_SECCOMP_FILTER)")
        return r

    # -- one job -------------------------------------------------------------------------------
    @contextmanager
    def slot(self, timeout: float | None = None):
        """Hold one of the SLOTS (its job uid) for the jobs run inside it (`run(..., slot=...)`): a caller
        can reserve the slot before it commits to a job. SlotsBusy if none is free within TIMEOUT."""
        try:
            uid = self._uids.get(timeout=timeout)
        except queue.Empty:
            raise SlotsBusy(f"all {self.slots} sandbox slots stayed busy for {timeout:g}s") from None
        try:
            yield Slot(uid)
        finally:
            self._uids.put(uid)

    def run(self, code: str, language: str, mode: str, limits: Limits, slot: Slot | None = None) -> dict:
        """Run CODE and return the result fields (stdout, stderr, exit_code, killed_reason, ...); in SLOT if
        given (held by the caller), else in the next free one."""
        base = {"language": language, "mode": mode, "sandbox": self.kind, "limits": limits.as_dict(),
                "confinement": self.confinement()}
        try:
            cmd = command(language, mode, int(limits.memory_mb), python=self.settings.python, ruff=self.settings.ruff)
        except Unsupported as e:
            return {**base, "exit_code": None, "stdout": "", "stderr": "", "output": "", "error": str(e),
                    "duration_ms": 0, "peak_memory_kb": 0, "killed_reason": None, "exceeded": None,
                    "truncated": False}
        if slot is not None:
            return {**base, **self._execute(code, cmd, limits, slot.uid)}
        with self.slot() as held:
            return {**base, **self._execute(code, cmd, limits, held.uid)}

    def _prlimit(self, cmd: Command, lim: Limits) -> list[str]:
        """prlimit's argv (GENESIS_SANDBOX=none; in the sandbox its init sets them: INIT's ulimit)."""
        r = _rlimits(cmd, lim)
        return [self.prlimit, f"--cpu={r['cpu']}:{r['cpu_hard']}", f"--as={r['as_kb'] * 1024}",
                f"--nproc={r['nproc']}", f"--fsize={r['fsize_kb'] * 1024}", f"--nofile={r['nofile']}",
                "--core=0", "--"]

    def _bwrap(self, cmd: Command, lim: Limits, fds: list[int], lifeline: int, seccomp_fd: int,
               info_fd: int | None) -> list[str]:
        # --as-pid-1 with bash as that init: bash runs the program as its child and exits with its status;
        # the namespace dies with bash, taking every leftover process down; the program's peak memory
        # reaches our wait4() (bwrap's own reaper would hide it); and the program is not pid 1, which
        # the kernel would shield from SIGXCPU and the CPU limit's SIGKILL. --disable-userns (with an
        # explicit --unshare-user) and the seccomp filter: no nested user namespaces. bwrap reads (and
        # closes) the --seccomp and --file descriptors; --info-fd tells us the sandbox's pid. No
        # --die-with-parent: bwrap may then be the worker's own child (no launcher process in between).
        # That option could fire while bwrap still sets the sandbox up (worker killed) and leave the
        # sandbox's pid 1 waiting forever for its parent; the lifeline ends the sandbox instead.
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--new-session",
                "--clearenv", "--as-pid-1",
                "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work", "--setenv", "TMPDIR", "/work",
                "--setenv", "LANG", "C.UTF-8", "--hostname", "genesis",
                *USR_BINDS, "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                "--symlink", "usr/lib64", "/lib64",
                "--proc", "/proc", "--dev", "/dev", "--size", str(SHM_MB * 1024 * 1024), "--tmpfs", "/dev/shm",
                "--remount-ro", "/dev",
                "--size", str(int(lim.tmpfs_mb) * 1024 * 1024), "--tmpfs", "/work"]
        for host, inside in cmd.binds:
            argv += ["--ro-bind", host, inside]
        for k, v in cmd.env:
            argv += ["--setenv", k, v]
        names = [cmd.filename] + [n for n, _c in cmd.files]
        for fd, name in zip(fds, names, strict=True):
            argv += ["--file", str(fd), f"/work/{name}"]
        argv += ["--seccomp", str(seccomp_fd)]
        if info_fd is not None:
            argv += ["--info-fd", str(info_fd)]
        argv += ["--chdir", "/work", "--remount-ro", "/", "--"]
        return argv + ["/usr/bin/bash", "-c", INIT.format(fd=lifeline, **_rlimits(cmd, lim)), "genesis", *cmd.argv]

    def _job_cgroup(self, lim: Limits) -> cgroup.Job:
        try:
            return self.cgroups.job(int(lim.memory_mb) * 1024 * 1024, int(lim.processes))
        except OSError as e:
            raise SandboxUnavailable(f"cannot create the job's cgroup under {self.cgroups.dirs[0]} ({e.strerror}): "
                                     "see `orchestrator genesis check`; GENESIS_CGROUP=off runs jobs without one "
                                     "(memfd denied, memory bounded per process)") from e

    def _execute(self, code: str, cmd: Command, lim: Limits, uid: int | None) -> dict:
        workdir, lifeline, info_r, job, peak = None, None, None, None, None
        files = [(cmd.filename, code), *cmd.files]
        fds = []  # ours to close once the child has its copies
        try:
            for name, content in files:  # the code reaches bwrap through memfds, never a host file
                fds.append(_memfd(f"genesis-{name}", content.encode()))
            if self.kind == "bwrap":
                files_fds = fds[:]
                life_r, lifeline = os.pipe()  # only the sandbox holds the read end, only we the write end
                fds.append(life_r)
                sec = _memfd("genesis-seccomp", self.seccomp)  # read and closed by bwrap
                fds.append(sec)
                info_w = None
                if self.cgroups is not None:
                    job = self._job_cgroup(lim)
                    info_r, info_w = os.pipe()
                    fds.append(info_w)
                    # bwrap holds a read end too: if we die before reading, its write of the pid must not
                    # fail (EPIPE), or it exits without releasing the sandbox's pid 1, which would then
                    # wait forever. pid 1 finds EOF instead of "go" and ends (after "go" it closes it).
                    fds.append(os.dup(info_r))
                else:
                    os.write(lifeline, b"go\n")  # nothing to wait for: the job may start at once
                argv = self._bwrap(cmd, lim, files_fds, life_r, sec, info_w)
                cwd, env, pass_fds = "/", {"PATH": "/usr/bin:/bin"}, tuple(fds)
            else:
                workdir = tempfile.mkdtemp(prefix="genesis-")
                for name, content in files:
                    with open(os.path.join(workdir, name), "w") as fh:
                        fh.write(content)
                    if uid is not None:
                        os.chown(os.path.join(workdir, name), uid, uid)
                if uid is not None:
                    os.chown(workdir, uid, uid)
                inside = {b[1]: b[0] for b in cmd.binds}
                argv = self._prlimit(cmd, lim) + [inside.get(a, a) for a in cmd.argv]
                cwd, env, pass_fds = workdir, {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                                               "LANG": "C.UTF-8", **dict(cmd.env)}, ()
            if uid is not None:
                # setpriv, not Popen(user=...): Python must then fork() the whole worker instead of
                # vfork(), which costs ~10 ms of CPU per job in a big multi-threaded process
                argv = [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
            if job is None:
                # No cgroup to read the peak from: GNU time reports the peak RSS of the tree it forks (our
                # own wait4() cannot: a vfork()ed child's maxrss counts the worker's memory it shared until
                # exec). The job cannot reach its output: INIT closes every inherited descriptor.
                peak = os.memfd_create("genesis-peak", 0)
                argv = [self.time, "--quiet", "-f", "%M", "-o", f"/proc/self/fd/{peak}", *argv]
                pass_fds = (*pass_fds, peak)
            life = [lifeline] if lifeline is not None else []
            lifeline = None
            try:
                return self._supervise(argv, cwd, env, pass_fds, lim, uid, fds, life, info_r, job, peak, cmd)
            finally:
                for fd in life:  # not closed by _supervise (it closes and removes it at a stop)
                    os.close(fd)
        finally:
            for fd in fds:  # emptied by _supervise once the child has its copies
                os.close(fd)
            for fd in (peak, lifeline, info_r):
                if fd is not None:
                    os.close(fd)
            if job is not None:
                job.remove()
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _supervise(self, argv, cwd, env, pass_fds, lim: Limits, uid: int | None, fds: list[int],
                   life: list[int], info_r: int | None, job: cgroup.Job | None, peak_fd: int | None,
                   cmd: Command | None = None) -> dict:
        cap = int(lim.output_kb) * 1024
        t0 = time.monotonic()
        deadline = t0 + float(lim.timeout_s)
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, pass_fds=pass_fds, start_new_session=True)
        while fds:  # the child has its copies; ours would keep the lifeline from ever reaching EOF
            os.close(fds.pop())
        bufs = {p.stdout.fileno(): bytearray(), p.stderr.fileno(): bytearray()}
        hints: list[str] = []
        err_tail = b""
        truncated = False
        child, stopped, setup_error = _join_cgroup(job, info_r, deadline, life) if job is not None else (None, None, None)
        sel = selectors.DefaultSelector()
        for f in (p.stdout, p.stderr):
            os.set_blocking(f.fileno(), False)
            sel.register(f.fileno(), selectors.EVENT_READ)
        try:
            while sel.get_map() and not stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = "timeout"
                    break
                for key, _ in sel.select(left):
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    if key.fd == p.stderr.fileno():  # with what came before: a message may come byte by byte
                        low = (err_tail + data).lower()
                        err_tail = low[-64:]
                        hints += [lim_ for sig, lim_ in SIGNATURES if sig.encode() in low and lim_ not in hints]
                    b = bufs[key.fd]
                    room = cap - len(b)
                    b += data[:max(0, room)]
                    if len(data) > room:
                        truncated, stopped = True, "output"
        finally:
            waited = None
            if stopped:
                if job is not None:
                    if child is None:  # stopped before the sandbox joined its cgroup: kill it by its pid
                        child = _child_pid(info_r, time.monotonic() + 0.01)
                        if child is not None:
                            _kill(child)
                    job.kill()  # everything of the job, at once
                if life:
                    os.close(life.pop())  # EOF on the lifeline: the sandbox ends itself and everything in it
                    waited = _wait_briefly(p.pid, 1.0)  # so that time still reports the peak memory
                if waited is None:
                    _kill_group(p.pid)
            sel.close()
            p.stdout.close()
            p.stderr.close()
        _, status, ru = waited or os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        duration_ms = round((time.monotonic() - t0) * 1000, 1)
        if uid is not None and self.kind == "none":
            _kill_uid(uid)  # no pid namespace: anything of this uid that outlived the job
        # NUL cannot be stored in PostgreSQL text/jsonb: shown as U+FFFD like any undecodable byte
        out, err = (bufs[k].decode("utf-8", "replace").replace("\x00", "\ufffd") for k in bufs)
        run = _Run(code=p.returncode, cpu_s=ru.ru_utime + ru.ru_stime, stopped=stopped, truncated=truncated,
                   setup_error=setup_error, hints=hints, oom=job.oom_kills() if job is not None else 0,
                   error_line=cmd.error_line if cmd else None, limit_note=cmd.limit_note if cmd else None)
        killed, exceeded, error = _outcome(run, lim, out, err)
        if truncated:
            marker = f"\n[genesis: output truncated at {cap} bytes; the job was stopped]\n"
            out, err = (s + marker if len(s.encode()) >= cap else s for s in (out, err))
        return {"exit_code": None if stopped else run.code, "stdout": out, "stderr": err, "output": out,
                "error": error, "duration_ms": duration_ms,
                "peak_memory_kb": job.peak_kb() if job is not None else _peak_kb(peak_fd), "killed_reason": killed,
                "exceeded": exceeded, "truncated": truncated}


@dataclass(frozen=True)
class _Run:
    """How a job's process ended, as _outcome needs it."""

    code: int
    cpu_s: float
    stopped: str | None           # timeout, output, setup, or None (it ended by itself)
    truncated: bool
    setup_error: str | None
    hints: list[str]              # limits named by the runtime's own error messages
    oom: int                      # out-of-memory kills in the job's cgroup
    error_line: str | None = None  # regex of the line that says what went wrong (else the last line)
    limit_note: str | None = None  # added to a limit's error (e.g. the compile counts against the limits)


def _outcome(run: _Run, lim: Limits, out: str, err: str) -> tuple[str | None, str | None, str | None]:
    """(killed_reason, exceeded, error) of a finished job: which limit held it, or its own failure."""
    code = run.code
    sig = -code if code < 0 else (code - 128 if 128 < code < 128 + 65 else 0)
    killed, exceeded = None, None
    if run.stopped == "output":
        killed, exceeded = "resource_exceeded", "output"
    elif run.oom and code != 0 and run.stopped != "timeout":
        killed, exceeded = "resource_exceeded", "memory"  # the kernel killed for the job's memory bound
    elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and not run.stopped and run.cpu_s >= lim.cpu_s - 0.1):
        killed, exceeded = "resource_exceeded", "cpu"
    elif sig == signal.SIGXFSZ:
        killed, exceeded = "resource_exceeded", "file_size"
    elif run.hints and (code != 0 or run.stopped or "processes" in run.hints):
        killed, exceeded = "resource_exceeded", run.hints[0]
    elif run.stopped == "timeout":
        killed = "timeout"
    if run.setup_error:
        error = run.setup_error
    elif killed == "timeout":
        error = f"timed out after {lim.timeout_s:g}s: the whole process tree was killed (raise timeout_s up to the operator's maximum)"
    elif killed:
        error = f"resource limit exceeded: {exceeded} (limits: {_limit_text(exceeded, lim)})"
        if run.limit_note and exceeded in ("memory", "cpu", "processes"):
            error += f"; {run.limit_note}"
    elif code != 0:
        tail = _error_line(run.error_line, err, out)
        error = f"exit code {code}: " + (tail[:300] if tail else f"signal {sig}" if sig else "no output")
    else:
        error = None
    return killed, exceeded, error


def _error_line(pattern: str | None, err: str, out: str) -> str | None:
    """The line that says why a job failed: the first line matching PATTERN (a compiler's first error), else
    the last non-empty line of stderr (or of stdout when stderr is empty)."""
    if pattern:
        rx = re.compile(pattern)
        hit = next((ln for ln in (err + "\n" + out).splitlines() if rx.search(ln)), None)
        if hit:
            return hit.strip()
    tail = [ln for ln in (err.strip() or out.strip()).splitlines() if ln.strip()][-1:]
    return tail[0] if tail else None


def _join_cgroup(job: cgroup.Job, info_r: int | None, deadline: float, life: list[int]):
    """The sandbox's pid 1 joins the job's cgroup (while bwrap sets it up) before "go": everything the job
    starts is born inside. Returns (its pid or None, stopped or None, setup error or None)."""
    try:
        child = _child_pid(info_r, deadline)
        if child is not None:
            job.add(child)
            os.write(life[0], b"go\n")
            return child, None, None
        return None, ("timeout" if time.monotonic() >= deadline else None), None
    except OSError as e:
        return None, "setup", (f"the job could not be put in its cgroup ({e.strerror}); it did not run. Check "
                               f"`orchestrator genesis check`; GENESIS_CGROUP=off runs jobs without a cgroup "
                               f"(memfd denied)")


def confinement_report(sb: Sandbox, probe: dict) -> tuple[list[str], list[str]]:
    """What `orchestrator genesis check` prints: one line per protection, and warnings (each with its fix)."""
    if sb.kind == "none":
        return (["memory: per process only (RLIMIT_AS), no cgroup; seccomp: off; user namespaces: allowed; "
                 "no bwrap at all"], [UNSAFE_WARNING])
    lines, warnings = [], []
    if sb.cgroups is not None:
        lines.append(f"memory: cgroup {sb.cgroups.version} per job (memory + pids): memory_mb bounds the whole job, "
                     f"all its processes together, memfd counted with shmem, tmpfs (/work) and /dev/shm pages; "
                     f"processes also bound the job's pids; peak memory read from the cgroup "
                     f"({sb.cgroups.dirs[0]})")
    else:
        lines.append(f"memory: NO cgroup ({sb.cgroup_reason}): memory_mb bounds each process's address space "
                     f"only (RLIMIT_AS); memfd_create and System V shared memory denied, /dev/shm "
                     f"{probe.get('shm_mb', SHM_MB)} MB; peak memory measured by GNU time")
        warnings.append(sb.fallback_text())
    shown = ", ".join(("unshare", "setns", "clone with namespace flags", "mount", "keyctl", "bpf",
                       "perf_event_open", "ptrace", "io_uring", "userfaultfd", "kernel modules"))
    lines.append(f"seccomp: on (EPERM for {shown}, ...: {len(seccomp.DENIED)} calls"
                 + (f" + {', '.join(seccomp.DENIED_WITHOUT_CGROUP)}" if sb.cgroups is None else "")
                 + "; clone3 ENOSYS; other ABIs killed)")
    lines.append(f"user namespaces: disabled (bwrap --disable-userns and seccomp; the probe's "
                 f"unshare(CLONE_NEWUSER): {probe['userns']})")
    lines.append("descriptors: only " + ", ".join(map(str, probe["fds"])) + " reach the job")
    return lines, warnings


def _rlimits(cmd: Command, lim: Limits) -> dict[str, int]:
    """The job's rlimits: CPU seconds (soft, hard), address space and file size in KB, processes, files."""
    cpu = max(1, int(-(-lim.cpu_s // 1)))
    return {"cpu": cpu, "cpu_hard": cpu + 1, "as_kb": (int(lim.memory_mb) + cmd.extra_as_mb) * 1024,
            "nproc": int(lim.processes), "fsize_kb": int(lim.file_size_mb) * 1024, "nofile": int(lim.open_files)}


def _limit_text(exceeded: str | None, lim: Limits) -> str:
    return {"memory": f"memory_mb={lim.memory_mb}", "processes": f"processes={lim.processes}",
            "disk": f"tmpfs_mb={lim.tmpfs_mb}", "file_size": f"file_size_mb={lim.file_size_mb}",
            "open_files": f"open_files={lim.open_files}", "cpu": f"cpu_s={lim.cpu_s:g}",
            "output": f"output_kb={lim.output_kb}"}.get(exceeded or "", "")


def _wait_briefly(pid: int, seconds: float):
    """wait4(PID) if it exits within SECONDS, else None."""
    end = time.monotonic() + seconds
    while True:
        got = os.wait4(pid, os.WNOHANG)
        if got[0] == pid:
            return got
        if time.monotonic() > end:
            return None
        time.sleep(0.005)


def _memfd(name: str, content: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _child_pid(info_fd: int, deadline: float) -> int | None:
    """The sandbox's pid from bwrap's --info-fd JSON; None if bwrap ended first or the deadline passed."""
    import json

    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([info_fd], [], [], left)[0]:
            return None
        chunk = os.read(info_fd, 4096)
        if not chunk:
            return None  # bwrap failed before starting the sandbox: its message is on stderr
        buf += chunk
        if b"}" in buf:
            return int(json.loads(buf)["child-pid"])


def _peak_kb(fd: int | None) -> int:
    """The first line GNU time wrote (it writes last, at offset 0)."""
    if fd is None:
        return 0
    os.lseek(fd, 0, os.SEEK_SET)
    first = os.read(fd, 64).split(b"\n", 1)[0].strip()
    return int(first) if first.isdigit() else 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # already gone


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # the group already exited: nothing left to kill


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of UID (a process of that uid sends kill -1; it can reach only its own)."""
    subprocess.run(["/usr/bin/kill", "-9", "-1"], user=uid, group=uid, extra_groups=[],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
