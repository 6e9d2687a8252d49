"""The daemon's `nats` worker: the bridge, when NATS_URL is set (otherwise nothing runs)."""

from __future__ import annotations

import logging

from orchestrator.core.bus import Bus, SelfSettlingBus
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings
from orchestrator.nats.bridge import Bridge
from orchestrator.nats.ledger import BRIDGE_ROLE, Ledger, register
from orchestrator.nats.settings import NatsSettings

log = logging.getLogger(__name__)


def build(s: Settings, ns: NatsSettings, *, conninfo: str | None = None, ack_wait_s: float = 30.0) -> Bridge:
    """The bridge's identity registered (as the operator), its buses as the bridge role (CONNINFO: another
    route to shared_queue, for tests), not started. ACK_WAIT_S: JetStream redelivers an unacked message
    after this long."""
    register(s)
    if conninfo:
        bus, results = Bus(conninfo, source="nats", pool_size=10), SelfSettlingBus(conninfo, source="nats", pool_size=4)
    else:
        bus = Bus.for_role(s, BRIDGE_ROLE, source="nats", pool_size=10)
        results = SelfSettlingBus.for_role(s, BRIDGE_ROLE, source="nats", pool_size=4)
    return Bridge(ns, Ledger(bus), results, ack_wait_s=ack_wait_s)


def make(s: Settings) -> Worker | None:
    ns = NatsSettings.from_env()  # a bad value fails before anything connects
    if not ns.enabled:
        log.info("nats: NATS_URL is unset, so the NATS bridge does not run (nothing depends on NATS)")
        return None
    bridge = build(s, ns).start()
    if ns.mode == "core":
        log.warning("nats: core NATS mode is at-most-once: a request sent while no bridge listens is lost "
                    "(NATS_MODE=jetstream keeps them; docs/nats.md)")

    def stop() -> None:
        bridge.stop()
        bridge.ledger.bus.close()
        bridge.results_bus.close()

    return Worker(name="nats", bus=bridge.ledger.bus, every_s=2.0, tick=bridge.tick, on_stop=stop)
