"""The daemon's `archive` worker: hourly, export the archive days past retention to cold storage and
let retention delete the verified ones (orchestrator.infra.cold_storage; `orchestrator archive` by hand)."""

from __future__ import annotations

import logging

from orchestrator.core.supervisor import Worker
from orchestrator.infra.cold_storage import ColdStorage
from orchestrator.infra.config import Settings

log = logging.getLogger(__name__)
EVERY_S = 3600.0


def export_once(s: Settings) -> list[dict]:
    """One export-and-prune pass; logs each day's result."""
    with ColdStorage(s) as cs:
        out = cs.export()
    for r in out:
        (log.warning if r["result"].startswith("failed") else log.info)(
            "cold storage %s %s: %s", r["queue"], r["day"], r["result"])
    return out


def make(s: Settings) -> Worker:
    return Worker(name="archive", every_s=EVERY_S, tick=lambda: export_once(s))
