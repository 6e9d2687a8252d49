"""Genesis's settings, read once from the environment (GENESIS_*), checked, with the fix when wrong."""

from __future__ import annotations

import os
from dataclasses import dataclass

from orchestrator.infra.settings import Env


@dataclass(frozen=True)
class GenesisSettings:
    concurrency: int          # GENESIS_CONCURRENCY: jobs run in parallel (default: the cores)
    sandbox: str              # GENESIS_SANDBOX: bwrap, or none (no isolation, unsafe)
    cgroup: str               # GENESIS_CGROUP: auto, off (memfd denied instead), required
    uid_base: int             # GENESIS_UID_BASE: the first of the uids jobs run as (root only)
    bwrap: str                # GENESIS_BWRAP: the bubblewrap binary
    ruff: str | None          # GENESIS_RUFF: ruff for lint mode (default: the venv's, then PATH)
    python: str               # GENESIS_PYTHON: the interpreter jobs run
    lease_margin_s: float     # GENESIS_LEASE_MARGIN_S: how long past a job's timeout its claim is held

    @classmethod
    def from_env(cls, env=None) -> GenesisSettings:
        e = Env(env)
        return cls(
            concurrency=e.int("GENESIS_CONCURRENCY", os.cpu_count() or 1, 1, 1024, "the number of jobs run in parallel"),
            sandbox=e.choice("GENESIS_SANDBOX", "bwrap", ("bwrap", "none"),
                             "bwrap isolates jobs; none runs them without isolation, unsafe"),
            cgroup=e.choice("GENESIS_CGROUP", "auto", ("auto", "off", "required"),
                            "auto: a cgroup per job where the host allows; off: no cgroup, memfd denied; "
                            "required: refuse to run code without one"),
            uid_base=e.int("GENESIS_UID_BASE", 600000 + 64 * (os.getpid() % 4096), 1000, 2**31 - 1 - 4096,
                           "the first uid jobs run as"),
            bwrap=e.str("GENESIS_BWRAP", "bwrap"),
            ruff=e.str("GENESIS_RUFF"),
            python=e.str("GENESIS_PYTHON", "/usr/bin/python3"),
            lease_margin_s=e.float("GENESIS_LEASE_MARGIN_S", 15.0, 0.5, 3600, "seconds a claim outlives a job's timeout"),
        )
