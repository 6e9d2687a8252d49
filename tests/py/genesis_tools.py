"""Shared helpers for the genesis tests: an in-process worker and submitting jobs over the bus."""

from __future__ import annotations

import os
import time

from orchestrator.core.bus import Bus
from orchestrator.core.messages import ulid


def submit(bus: Bus, jobs: list[dict]) -> list[str]:
    """Publish JOBS on job_requests (answers to job_results); returns their request ids."""
    ids = [ulid() for _ in jobs]
    bus.publish_batch("job_requests", [{"id": rid, "reply_to": "job_results", "mode": "run", **j}
                                       for rid, j in zip(ids, jobs, strict=True)])
    return ids


def results(bus: Bus, ids: list[str], timeout: float = 30.0) -> dict[str, dict]:
    """Wait for one result per id on job_results; every result is archived as it is read."""
    want, got = set(ids), {}
    end = time.monotonic() + timeout
    while want - set(got) and time.monotonic() < end:
        msgs = bus.read("job_results", 100, vt_s=60)
        for m in msgs:
            rid = m.body.get("request_id")
            got.setdefault(rid, []).append(m.body)
            bus.ack(m)
        if not msgs:
            time.sleep(0.05)
    missing = want - set(got)
    assert not missing, f"no result for {len(missing)} of {len(want)} jobs within {timeout}s"
    return got


def one_each(got: dict[str, list], ids: list[str]) -> dict[str, dict]:
    for rid in ids:
        assert len(got[rid]) == 1, f"{rid}: {len(got[rid])} results"
    return {rid: got[rid][0] for rid in ids}


def procs_with(marker: str) -> list[int]:
    """Pids on the host whose command line contains MARKER (sandboxed processes are visible here)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out


def forget_genesis_heartbeats(s, since) -> None:
    """Drop the heartbeats our test workers sent since SINCE: a stopped test worker must not leave a
    'genesis:default gone' alert behind for the tests that follow (alerts look back an hour)."""
    from orchestrator.infra.db import connect, owner_conninfo

    with connect(owner_conninfo(s, "shared_queue")) as c:
        for t in ("pgmq.q_instance_heartbeat", "pgmq.a_instance_heartbeat"):
            c.execute(f"DELETE FROM {t} WHERE message->>'service' = 'genesis' AND enqueued_at >= %s", (since,))
