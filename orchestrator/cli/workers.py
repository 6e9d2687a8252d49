"""The daemon's worker kinds: name -> the module whose `make(settings)` builds that worker (imported on use)."""

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
    "nexus": "orchestrator.nexus.worker",
}


def factories() -> dict[str, Callable]:
    """Every worker kind's factory, in a stable order."""
    return {name: importlib.import_module(mod).make for name, mod in WORKERS.items()}
