"""Heartbeat worker: publishes instance_heartbeat so CentralCloud can tell healthy, late and gone."""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time

from orchestrator import __version__
from orchestrator.core.bus import Bus
from orchestrator.core.messages import now_iso
from orchestrator.core.supervisor import Worker, process_stats
from orchestrator.infra.config import Settings
from orchestrator.infra.db import service_role

log = logging.getLogger(__name__)
STARTED = time.time()


def rss_mb() -> float:
    """Current resident set size of this process in MB (from /proc; ru_maxrss is the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1048576, 1)
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def beat(bus: Bus, instance_id: str, service: str, stats: dict | None = None) -> int:
    return bus.publish("instance_heartbeat", {
        "instance_id": instance_id, "service": service, "at": now_iso(),
        "stats": {"host": socket.gethostname(), "pid": os.getpid(), "uptime_s": round(time.time() - STARTED, 1),
                  "rss_mb": rss_mb(), "version": __version__, **process_stats(), **(stats or {})},
    })


def last_beat(bus: Bus, instance_id: str, service: str, stats: dict | None = None) -> None:
    """On a graceful stop: a heartbeat with state "stopped", so bus.alerts() does not call the service late
    (a crash sends none, and then the alert is right)."""
    try:
        beat(bus, instance_id, service, {**(stats or {}), "state": "stopped"})
    except Exception as e:  # noqa: BLE001 - best effort at shutdown
        log.warning("could not send the stopping heartbeat (%s)", type(e).__name__)


class Heartbeats:
    """A service's own liveness, beside its consumers: a beat every ORCHESTRATOR_HEARTBEAT_S with STATS()
    (what the service reports: jobs run, calls made, slots...), and a last beat saying "stopped" on a
    graceful stop. A missed beat is only logged (the alert comes from bus.heartbeat_status)."""

    def __init__(self, bus: Bus, s: Settings, service: str, stats=lambda: {}):
        self.bus, self.s, self.service, self.stats = bus, s, service, stats
        self.stop_event = threading.Event()

    def start(self) -> Heartbeats:
        threading.Thread(target=self._loop, name=f"{self.service}-heartbeat", daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                beat(self.bus, self.s.instance_id, self.service, self.stats())
            except Exception as e:  # noqa: BLE001 - a missed beat is only logged
                log.warning("%s: heartbeat failed (%s)", self.service, type(e).__name__)
            self.stop_event.wait(self.s.heartbeat_s)

    def stop(self) -> None:
        self.stop_event.set()
        last_beat(self.bus, self.s.instance_id, self.service, self.stats())


def make(s: Settings, service: str = "singularity") -> Worker:
    role = service_role(service, s.instance_id)
    bus = Bus.for_role(s, role, source=f"{service}:{s.instance_id}", pool_size=1)
    def on_stop() -> None:
        last_beat(bus, s.instance_id, service)
        bus.close()

    return Worker(name="heartbeat", bus=bus, every_s=s.heartbeat_s,
                  tick=lambda: beat(bus, s.instance_id, service), on_stop=on_stop)
