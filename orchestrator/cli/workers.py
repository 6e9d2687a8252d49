"""The daemon's worker kinds: name -> the module whose `make(settings)` builds that worker (imported on use);
a factory may return None when its worker is not configured (nats without NATS_URL)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

WORKERS = {
    "alerts": "orchestrator.core.alerts",
    "archive": "orchestrator.core.archive",
    "centralcloud": "orchestrator.centralcloud.worker",
    "genesis": "orchestrator.genesis.worker",
    "heartbeat": "orchestrator.core.heartbeat",
    "hitl": "orchestrator.nexus.hitl_worker",
    "nats": "orchestrator.nats.worker",  # the NATS bridge: runs only when NATS_URL is set
    "nexus": "orchestrator.nexus.worker",
}


def factories() -> dict[str, Callable]:
    """Every worker kind's factory, in a stable order."""
    return {name: importlib.import_module(mod).make for name, mod in WORKERS.items()}
