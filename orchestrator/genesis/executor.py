"""Genesis: answer one job request (run / validate / lint code in the sandbox), exactly once per request id.

Order per delivery: take a sandbox slot -> resolve limits and claim the request id (SQL: run, done or busy)
-> run in the sandbox -> free the slot -> store the result (SQL, first one wins) -> publish it and ack the
request in one transaction. A redelivery after the result is stored publishes the stored result and never
runs the code again.

The worker reads with more consumers than slots, so that a slot never waits for the database: while jobs
run, other consumers read, store and publish. Parallelism stays the slots: no code runs outside one. The
claim comes after the slot is held, so a claim's lease (the job's timeout + the margin) never runs down
while it waits; a delivery that finds no slot free within half its visibility timeout is handed back
(not an attempt), for this worker or another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.core.bus import TRANSIENT, Bus, Message, Reject
from orchestrator.core.messages import ValidationError
from orchestrator.genesis.sandbox import Limits, Sandbox, Slot, SlotsBusy

log = logging.getLogger(__name__)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def _result_message(request_id: str, r: dict, m: Message | None = None) -> dict:
    """The job_results message for request M: what it answers (request_sha256: the agent checks it against
    the request it stored), its msg_id (a client that sent no id matches by it) and its agent."""
    keep = ("output", "error", "exit_code", "duration_ms", "killed_reason", "exceeded", "stdout", "stderr",
            "peak_memory_kb", "truncated", "language", "mode", "limits", "sandbox", "confinement")
    out = {"type": "job_result", "request_id": request_id, **{k: r.get(k) for k in keep}}
    if m is not None:
        out.update({k: v for k, v in (("request_sha256", m.content_sha256), ("request_msg_id", m.msg_id),
                                      ("agent_id", m.body.get("agent_id"))) if v is not None})
    return out


def error_result(request_id: str, body: dict, error: str, m: Message | None = None) -> dict:
    return _result_message(request_id, {"error": error, "exit_code": None, "output": "", "stdout": "", "stderr": "",
                                        "duration_ms": 0, "peak_memory_kb": 0, "truncated": False,
                                        "language": body.get("language"), "mode": body.get("mode")}, m)


class Genesis:
    """The handler's state: the bus (shared_queue), the genesis database pool, the sandbox."""

    def __init__(self, bus: Bus, pool, sandbox: Sandbox, lease_margin_s: float | None = None):
        self.bus, self.pool, self.sandbox = bus, pool, sandbox
        # how long past a job's timeout its request stays invisible (and its claim held) before a
        # crashed worker's job is handed to another worker
        self.lease_margin_s = lease_margin_s if lease_margin_s is not None else sandbox.settings.lease_margin_s
        self.ran = 0  # code executions by this process (tests and stats)

    def _sql(self, query: str, params: tuple):
        with self.pool.connection() as c:
            return c.execute(query, params).fetchone()["r"]

    @staticmethod
    def requested_limits(body: dict):
        """The request's limits (body.limits, plus timeout_s); SQL caps them at the operator's maxima."""
        req = body.get("limits")
        req = {} if req is None else dict(req) if isinstance(req, dict) else req
        if isinstance(req, dict) and body.get("timeout_s") is not None:
            req["timeout_s"] = body["timeout_s"]
        return req

    def _hold(self, m: Message, seconds: float) -> None:
        """Make sure this delivery stays invisible for SECONDS more (long jobs)."""
        if m.vt < datetime.now(UTC) + timedelta(seconds=seconds):
            self.bus.extend(m, seconds)

    def handle(self, m: Message) -> None:
        """Answer M on its reply_to (or job_results), then ack it; settles the message itself."""
        body, rid = m.body, m.id or f"msg-{m.msg_id}"
        queue = body.get("reply_to") or "job_results"
        wait = max(0.0, (m.vt - datetime.now(UTC)).total_seconds() / 2)
        try:
            with self.sandbox.slot(timeout=wait) as slot:
                ran, result = self._claim_and_run(m, rid, slot)
        except SlotsBusy:
            log.info("genesis: %s waited %.1fs for a sandbox slot; handed back", rid, wait)
            self.bus.give_back(m, 0)  # not an attempt: this worker is full, another (or this one) takes it later
            return None
        if result is None:
            return None  # given back: the request is being worked on elsewhere
        if ran:
            result = self._record(rid, _result_message(rid, result, m))
        return self._reply(m, queue, result)

    def _claim_and_run(self, m: Message, rid: str, slot: Slot) -> tuple[bool, dict | None]:
        """Claim M's request id and run its code in SLOT: (True, the sandbox's result), or (False, the result
        to publish without running: a refusal or the stored result), or (False, None) when it was given back."""
        body = m.body
        code = body.get("code") or ""
        try:
            claim = self._sql("SELECT genesis.claim(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) AS r",
                              (rid, body.get("agent_id"), body.get("language"), body.get("mode"),
                               hashlib.sha256(code.encode()).hexdigest(), Jsonb(self.requested_limits(body)),
                               WORKER_ID, self.lease_margin_s, m.sender, m.content_sha256))
        except psycopg.errors.InvalidParameterValue as e:
            return False, error_result(rid, body, f"bad limits: {e.diag.message_primary}"
                                       + (f" ({e.diag.message_hint})" if e.diag.message_hint else ""), m)
        if claim["action"] == "conflict":  # an id reused for other code or by another sender: never the stored result
            log.warning("genesis: %s from %s refused: %s", rid, m.sender, claim["reason"])
            return False, error_result(rid, body, claim["reason"], m)
        if claim["action"] == "done":
            log.info("genesis: %s already finished; publishing the stored result", rid)
            return False, claim["result"]
        if claim["action"] == "busy":
            until = datetime.fromisoformat(claim["until"])
            wait = max(1.0, (until - datetime.now(UTC)).total_seconds() + 1)
            log.info("genesis: %s is running on %s; looking again in %.0fs", rid, claim.get("worker"), wait)
            self.bus.give_back(m, wait)  # not an attempt: the request is being worked on elsewhere
            return False, None
        lim = Limits.from_dict(claim["limits"])
        lease = float(lim.timeout_s) + self.lease_margin_s
        self._hold(m, lease + 1)  # after the claim: the request reappears only once the claim has lapsed
        if claim.get("runs", 1) > 1:
            log.warning("genesis: %s runs again (run %s): its previous worker died before recording a result",
                        rid, claim["runs"])
        r = self.sandbox.run(code, body.get("language") or "", body.get("mode") or "run", lim, slot=slot)
        self.ran += 1
        return True, r

    def _record(self, rid: str, result: dict, patience_s: float = 30.0) -> dict:
        """Store the result, retrying while the database is away: the code has run, keep its outcome."""
        delay, end = 0.2, time.monotonic() + patience_s
        while True:
            try:
                return self._sql("SELECT genesis.finish_execution(%s, %s) AS r", (rid, Jsonb(result)))
            except TRANSIENT:
                if time.monotonic() > end:
                    raise
                log.warning("genesis: cannot record %s yet (database away); retrying in %.1fs", rid, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _reply(self, m: Message, queue: str, result: dict) -> None:
        try:
            self.bus.reply_and_ack(m, queue, result)
        except ValidationError as e:
            raise Reject(f"cannot answer on {queue}: {e}") from e
