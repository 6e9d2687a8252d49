"""The `genesis` worker: runs every job_requests message in the sandbox and answers on its reply_to
(or job_results). Refuses to start when the sandbox cannot run code (GENESIS_SANDBOX=none overrides)."""

from __future__ import annotations

import logging
import threading

from orchestrator.core.bus import SelfSettlingBus
from orchestrator.core.heartbeat import beat, last_beat
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
    bus = SelfSettlingBus(role_conninfo(s, "shared_queue", "svc_genesis"), source="genesis", poll_ms=s.poll_ms,
                          vt_s=s.visibility_timeout_s, pool_size=n + 1)
    pool = make_pool(role_conninfo(s, "genesis", "svc_genesis"), max_size=n + 1, name="genesis")
    g = Genesis(bus, pool, sandbox)
    stop = threading.Event()

    def heartbeats() -> None:  # the genesis service's own liveness (instance_heartbeat)
        while not stop.is_set():
            try:
                beat(bus, s.instance_id, "genesis", {"jobs_run": g.ran, "sandbox": sandbox.kind, "slots": n,
                                                    "confinement": sandbox.confinement()})
            except Exception as e:  # noqa: BLE001 - a missed beat is only logged
                log.warning("genesis: heartbeat failed (%s)", type(e).__name__)
            stop.wait(s.heartbeat_s)

    threading.Thread(target=heartbeats, name="genesis-heartbeat", daemon=True).start()

    def on_stop() -> None:
        stop.set()
        last_beat(bus, s.instance_id, "genesis", {"jobs_run": g.ran, "sandbox": sandbox.kind, "slots": n,
                                                    "confinement": sandbox.confinement()})
        pool.close()
        bus.close()

    # one job per read: a job takes seconds and holds its slot, so a batch would only age in the slot
    # (SHARED_QUEUE_BATCH_SIZE sets the read size of the other workers; parallelism here is the slots)
    return Worker(name="genesis", bus=bus, queue="job_requests", concurrency=n, batch=1, handle=g.handle,
                  on_stop=on_stop)
