"""Resource limits of one sandboxed job: operator defaults and maxima (the genesis.limits table) and the
request's own values, which can only lower them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# name -> (default, operator maximum, unit, meaning). The same rows are seeded into genesis.limits;
# these are used when no database is at hand (`orchestrator genesis run`, `check`).
DEFAULTS: dict[str, tuple[float, float, str, str]] = {
    "timeout_s": (10, 120, "s", "wall-clock time; the whole process tree is killed at the deadline"),
    "cpu_s": (10, 120, "s", "CPU seconds per process (RLIMIT_CPU)"),
    "memory_mb": (256, 2048, "MB", "memory of the whole job through its cgroup (without one: per process); also "
                  "address space per process (RLIMIT_AS) plus what runtimes reserve up front: +1024 MB node (V8), "
                  "+512 MB elixir (Erlang VM) and rust (rustc; the compile counts against the limits)"),
    "processes": (64, 512, "", "processes and threads of the sandbox uid (RLIMIT_NPROC)"),
    "file_size_mb": (16, 256, "MB", "largest file a process may write (RLIMIT_FSIZE)"),
    "tmpfs_mb": (64, 512, "MB", "size of the private tmpfs working directory /work"),
    "open_files": (64, 1024, "", "open file descriptors per process (RLIMIT_NOFILE)"),
    "output_kb": (64, 1024, "KB", "stdout and stderr each; beyond it the job is stopped and the output truncated"),
}


@dataclass(frozen=True)
class Limits:
    timeout_s: float = DEFAULTS["timeout_s"][0]
    cpu_s: float = DEFAULTS["cpu_s"][0]
    memory_mb: int = DEFAULTS["memory_mb"][0]
    processes: int = DEFAULTS["processes"][0]
    file_size_mb: int = DEFAULTS["file_size_mb"][0]
    tmpfs_mb: int = DEFAULTS["tmpfs_mb"][0]
    open_files: int = DEFAULTS["open_files"][0]
    output_kb: int = DEFAULTS["output_kb"][0]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Limits:
        known = {k: d[k] for k in DEFAULTS if d.get(k) is not None}
        conv = {k: (float(v) if k.endswith("_s") else int(v)) for k, v in known.items()}
        return cls(**conv)


def resolve_local(requested: dict | None) -> Limits:
    """Apply REQUESTED over the built-in defaults, capped at the built-in maxima (no database)."""
    out = {}
    for name, (default, maximum, _u, _d) in DEFAULTS.items():
        v = (requested or {}).get(name)
        if v is None:
            v = default
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"limit {name} must be a positive number, got {v!r}")
        out[name] = min(v, maximum)
    unknown = set(requested or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown limit(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    return Limits.from_dict(out)
