"""Heartbeat worker: publishes instance_heartbeat so CentralCloud can tell healthy, late and gone."""

from __future__ import annotations

import os
import resource
import socket
import time

from orchestrator.core.bus import Bus
from orchestrator.core.messages import now_iso
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings
from orchestrator.infra.db import role_conninfo, service_role

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
                  "rss_mb": rss_mb(), **(stats or {})},
    })


def last_beat(bus: Bus, instance_id: str, service: str, stats: dict | None = None) -> None:
    """On a graceful stop: a heartbeat with state "stopped", so bus.alerts() does not call the service late
    (a crash sends none, and then the alert is right)."""
    try:
        beat(bus, instance_id, service, {**(stats or {}), "state": "stopped"})
    except Exception as e:  # noqa: BLE001 - best effort at shutdown
        import logging

        logging.getLogger(__name__).warning("could not send the stopping heartbeat (%s)", type(e).__name__)


def make(s: Settings, service: str = "singularity") -> Worker:
    role = service_role(service, s.instance_id)
    bus = Bus(role_conninfo(s, "shared_queue", role), source=f"{service}:{s.instance_id}", poll_ms=s.poll_ms,
              pool_size=1)
    def on_stop() -> None:
        last_beat(bus, s.instance_id, service)
        bus.close()

    return Worker(name="heartbeat", bus=bus, every_s=s.heartbeat_s,
                  tick=lambda: beat(bus, s.instance_id, service), on_stop=on_stop)
