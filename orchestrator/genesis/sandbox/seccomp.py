"""The seccomp filter of every sandboxed job, compiled once per worker with libseccomp (through pyseccomp,
ctypes over the system's libseccomp.so.2) and handed to bubblewrap as a BPF program (`--seccomp FD`).

Denied calls fail with EPERM, so a program sees a clear "Operation not permitted" instead of dying;
clone3 fails with ENOSYS, which makes the C library fall back to clone, whose flags the filter can see
(it cannot look into clone3's argument struct). Calls from another ABI (32-bit int 0x80, x32) kill the
process: the filter only knows the native numbers.
"""

from __future__ import annotations

import errno
import os

# Kernel attack surface that no submitted program needs: namespaces (nested user namespaces above all),
# mounts, keyrings, BPF, perf, tracing other processes, kernel modules, io_uring, userfaultfd, the clock,
# file handles (open_by_handle_at escapes bind mounts), and obsolete calls.
DENIED = (
    "unshare", "setns",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "process_madvise",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "memfd_secret",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "personality", "modify_ldt", "iopl", "ioperm", "vm86", "vm86old",
    "move_pages", "migrate_pages", "mbind", "set_mempolicy", "set_mempolicy_home_node",
    "sysfs", "_sysctl", "uselib", "ustat", "nfsservctl", "create_module", "get_kernel_syms", "query_module",
)
# Without a cgroup, memory that RLIMIT_AS does not see: memfds and System V shared memory.
DENIED_WITHOUT_CGROUP = ("memfd_create", "shmget")
# clone()'s namespace flags: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

_cache: dict[bool, bytes] = {}


class SeccompUnavailable(RuntimeError):
    """libseccomp or its Python binding is missing; the message says what to install."""


def program(deny_memfd: bool) -> bytes:
    """The BPF program (bytes for bwrap --seccomp); DENY_MEMFD adds DENIED_WITHOUT_CGROUP."""
    if deny_memfd not in _cache:
        _cache[deny_memfd] = _compile(deny_memfd)
    return _cache[deny_memfd]


def _compile(deny_memfd: bool) -> bytes:
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as e:  # RuntimeError: pyseccomp found no libseccomp.so.2
        raise SeccompUnavailable(f"the seccomp filter cannot be built ({e}): install libseccomp2 (apt-get install "
                                 "libseccomp2) and pyseccomp (make setup, or pip install pyseccomp). Untrusted "
                                 "code is refused without it") from None
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED + (DENIED_WITHOUT_CGROUP if deny_memfd else ()):
        nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
        if nr == -1:  # unknown to this libseccomp: nothing to deny
            continue
        f.add_rule(eperm, nr)  # a negative pseudo-number (not on this architecture) adds nothing
    for flag in CLONE_NEW:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    fd = os.memfd_create("genesis-seccomp", 0)
    try:
        with os.fdopen(os.dup(fd), "wb") as fh:
            f.export_bpf(fh)
        os.lseek(fd, 0, os.SEEK_SET)
        out = b""
        while chunk := os.read(fd, 65536):
            out += chunk
    finally:
        os.close(fd)
    if not out or len(out) % 8:
        raise SeccompUnavailable("libseccomp produced no usable filter; reinstall libseccomp2")
    return out
