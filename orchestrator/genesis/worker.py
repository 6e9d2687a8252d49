"""The `genesis` worker: runs every job_requests message in the sandbox and answers on its reply_to
(or job_results). Refuses to start when the sandbox cannot run code (GENESIS_SANDBOX=none overrides)."""

from __future__ import annotations

import logging

from orchestrator.core.bus import SelfSettlingBus
from orchestrator.core.heartbeat import Heartbeats
from orchestrator.core.supervisor import Worker
from orchestrator.genesis.executor import Genesis
from orchestrator.genesis.sandbox import Sandbox, SandboxUnavailable
from orchestrator.genesis.settings import GenesisSettings
from orchestrator.infra.config import Settings
from orchestrator.infra.db import make_pool, role_conninfo

log = logging.getLogger(__name__)


def concurrency() -> int:
    """GENESIS_CONCURRENCY (default: the cores); SettingError with the fix when it is not a number."""
    return GenesisSettings.from_env().concurrency


def make(s: Settings) -> Worker:
    gs = GenesisSettings.from_env()
    n = gs.concurrency
    try:
        sandbox = Sandbox(slots=n, settings=gs)
        if sandbox.kind == "bwrap":
            sandbox.check()
            if sandbox.cgroups is None:
                log.warning("genesis: %s", sandbox.fallback_text())
    except SandboxUnavailable as e:
        raise SystemExit(f"genesis: {e}") from None
    # two consumers per slot: one job runs in the slot while the other reads, claims and waits for it, or
    # stores and publishes its result (executor: the slot is taken before the claim; no code runs outside one)
    consumers = 2 * n
    bus = SelfSettlingBus.for_role(s, "svc_genesis", source="genesis", pool_size=consumers + 1)
    pool = make_pool(role_conninfo(s, "genesis", "svc_genesis"), max_size=consumers + 1, name="genesis")
    g = Genesis(bus, pool, sandbox)
    beats = Heartbeats(bus, s, "genesis", lambda: {"jobs_run": g.ran, "sandbox": sandbox.kind, "slots": n,
                                                   "confinement": sandbox.confinement()}).start()

    def on_stop() -> None:
        beats.stop()
        pool.close()
        bus.close()

    # one job per read: a job takes seconds and holds its slot, so a batch would only age in the slot
    # (SHARED_QUEUE_BATCH_SIZE sets the read size of the other workers; parallelism here is the slots)
    return Worker(name="genesis", bus=bus, queue="job_requests", concurrency=consumers, batch=1, handle=g.handle,
                  on_stop=on_stop)
