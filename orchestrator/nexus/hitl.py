"""Human in the loop: hold approval/question requests for people, record them in nexus, publish decisions.

The worker reads requests with a long visibility timeout and keeps the leases alive; each item is
recorded in nexus.hitl_items keyed by the request id, so the page reads from nexus and a redelivery
(after this process died) re-attaches to the same item instead of creating a second one. Decisions
are committed in nexus first (nexus.hitl_decide, never twice), then published with reply_and_ack:
the response is sent and the request archived in one shared_queue transaction, and a fenced ack
makes a second publish of the same delivery send nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from orchestrator.core import metrics
from orchestrator.core.bus import Bus, Message
from orchestrator.core.messages import ValidationError

log = logging.getLogger(__name__)

KINDS = {"approval_requests": "approval", "question_requests": "question"}
RESULT = {"approval_requests": "approval_responses", "question_requests": "question_responses"}


def _delivery(queue: str, msg_id: int, read_ct: int) -> Message:
    now = datetime.now(UTC)
    return Message(queue, msg_id, read_ct, now, now, {})


class Hitl:
    def __init__(self, bus: Bus, pool: ConnectionPool, *, lease_s: float = 300.0, default_timeout_s: float = 86400.0,
                 batch: int = 50, on_new=None):
        self.on_new = on_new  # Callable[[kind, body], None]: a request held for the first time (the webhook)
        self.bus = bus
        self.pool = pool
        self.lease_s = lease_s
        self.default_timeout_s = default_timeout_s
        self.batch = batch

    def _q(self, sql: str, params: tuple = ()) -> list[dict]:
        with self.pool.connection() as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    # -- the worker's periodic pass ------------------------------------------------------------
    def tick(self) -> None:
        self.claim_new()
        self.renew_leases()
        self.expire()
        self.publish()

    def claim_new(self) -> int:
        """Read new requests (long lease) and record them; already decided ones are published again.

        Each message of a batch is handled on its own: one that fails (or is refused) never keeps the
        others of its batch from reaching a person."""
        n = 0
        for queue, kind in KINDS.items():
            for m in self.bus.read(queue, self.batch, vt_s=int(self.lease_s)):
                try:
                    self._claim(m, queue, kind)
                    n += 1
                except Exception as e:  # noqa: BLE001 - recorded on the message (retried, then dead-lettered)
                    if self.bus.away(m, e):
                        continue
                    log.exception("hitl: %s msg %s could not be held", queue, m.msg_id)
                    self.bus.safely(self.bus.fail, m, f"{type(e).__name__}: {e}")
        return n

    def _claim(self, m: Message, queue: str, kind: str) -> None:
        reply_to = m.body.get("reply_to") or RESULT[queue]
        status = self._q("SELECT nexus.hitl_claim(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) AS s",
                         (kind, queue, m.msg_id, m.read_ct, self.lease_s, Jsonb(m.body), reply_to,
                          self.default_timeout_s, m.sender, m.content_sha256))[0]["s"]
        if status == "conflict":  # an id reused for another request: answer this one with an error, never a decision
            answer = self._q("SELECT nexus.hitl_conflict_response(%s, %s, %s) AS r",
                             (kind, m.id, m.content_sha256))[0]["r"]
            log.warning("hitl: %s %s from %s refused: its id is held for another request", kind, m.id, m.sender)
            try:
                self.bus.reply_and_ack(m, reply_to, answer)
            except ValidationError as e:
                self.bus.dead_letter(m, f"request id reused, and the error answer cannot be sent on {reply_to}: {e}")
            return
        log.info("hitl: holding %s %s from %s (%s)", kind, m.id, m.body.get("agent_id"), status)
        if self.on_new and status == "pending" and m.read_ct == 1:  # its first delivery: announce it once
            self.on_new(kind, m.body)

    def renew_leases(self) -> int:
        """Extend every held delivery whose lease ends within half a lease."""
        n = 0
        for r in self._q("SELECT * FROM nexus.hitl_leases_due(%s)", (self.lease_s / 2,)):
            st = self.bus.extend(_delivery(r["queue"], r["msg_id"], r["read_ct"]), self.lease_s)
            if st == "ok":
                self._q("SELECT nexus.hitl_leased(%s, %s, %s)", (r["request_id"], r["read_ct"], self.lease_s))
                n += 1
        return n

    def expire(self) -> int:
        """Deny approvals past their deadline (decided_by nexus:timeout)."""
        n = self._q("SELECT nexus.hitl_expire() AS n")[0]["n"]
        if n:
            metrics.HITL_DECISIONS.labels(kind="approval", outcome="timed_out").inc(n)
            log.info("hitl: %d approval(s) denied at their deadline (decided_by nexus:timeout)", n,
                     extra={"fields": {"event": "hitl_timeout", "count": n}})
        return n

    def publish(self, request_id: str | None = None) -> int:
        """Publish decided items on their reply queue and archive their request, in one transaction."""
        n = 0
        for r in self._q("SELECT * FROM nexus.hitl_to_publish(%s)", (request_id,)):
            held = _delivery(r["queue"], r["msg_id"], r["read_ct"])
            try:
                st = self.bus.reply_and_ack(held, r["reply_to"], r["decision"])
            except ValidationError as e:  # e.g. a reply_to queue that does not exist: never publishable
                st = self.bus.dead_letter(held, f"cannot publish the decision on {r['reply_to']}: {e}")
                log.error("hitl: %s %s dead-lettered (%s): %s", r["kind"], r["request_id"], st, e)
            if st in ("acked", "gone", "dead_lettered"):  # gone: archived by an earlier publish that died after it
                self._q("SELECT nexus.hitl_published(%s)", (r["request_id"],))
                n += 1
        return n

    # -- what the page does ------------------------------------------------------------------------
    def pending(self, kind: str, limit: int = 1000) -> list[dict]:
        return self._q("SELECT * FROM nexus.hitl_pending(%s, %s)", (kind, limit))

    def decide(self, request_id: str, user: str, *, approved: bool | None = None, response: str | None = None,
               comment: str | None = None) -> dict:
        """Record a vote or answer; when it decides the item, publish at once (the worker retries otherwise)."""
        out = self._q("SELECT nexus.hitl_decide(%s, %s, %s, %s, %s) AS r",
                      (request_id, user, approved, response, comment))[0]["r"]
        log_decision(request_id, user, approved, response, comment, out)
        if out["status"] == "decided":
            try:
                self.publish(request_id)
            except Exception:  # noqa: BLE001 - the worker's next pass publishes it
                log.exception("hitl: publishing %s failed; the worker will retry", request_id)
        return out


def log_decision(request_id: str, user: str, approved: bool | None, response: str | None, comment: str | None,
                 out: dict) -> None:
    """One INFO line (and the counter) per human decision or vote the page records."""
    kind = "question" if approved is None else "approval"
    what = ("answered" if approved is None else "approved" if approved else "denied")
    status = out.get("status")
    if status not in ("decided", "recorded"):
        log.info("hitl: %s %s by %s not recorded: %s", kind, request_id, user, status,
                 extra={"fields": {"event": "hitl_decision", "kind": kind, "request_id": request_id, "user": user,
                                   "status": status}})
        return
    metrics.HITL_DECISIONS.labels(kind=kind, outcome=what if status == "decided" else "vote").inc()
    tally = "" if status == "decided" else f" (vote: {out.get('approvals')} of {out.get('quorum')} approvals so far)"
    detail = f": {response[:80]!r}" if response else (f" ({comment[:80]!r})" if comment else "")
    log.info("hitl: %s %s %s by %s%s%s", kind, request_id, what, user, detail, tally,
             extra={"fields": {"event": "hitl_decision", "kind": kind, "request_id": request_id, "user": user,
                               "outcome": what, "status": status}})
