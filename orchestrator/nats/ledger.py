"""The bridge's side of the bus: a NATS request into pgmq exactly once, a result back to its NATS asker.

Every rule is SQL (sql/procedures/shared_queue/75_nats.sql, the bus's validation trigger); this module
calls it in the right order, in one transaction per request: nats.claim, the normal Bus.publish as the
bridge's own role, nats.enqueued."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.core.bus import Bus, Message, Reject, db_away
from orchestrator.core.messages import ValidationError
from orchestrator.infra.config import Settings
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo

log = logging.getLogger(__name__)

BRIDGE_ID = "nats"        # its entry in bus.instances (reply queues llm_results_nats, ...)
BRIDGE_ROLE = "svc_nats"  # its LOGIN role: the sender the bus stamps on every bridged request
DB_WAIT_S = 5.0           # a request waits this long for a database connection before it is "unavailable"
@dataclass(frozen=True)
class Taken:
    """What became of one NATS request: STATUS, and the REPLY to send the asker now (None: nothing now)."""

    status: str   # enqueued, duplicate, answered, rejected, conflict, closed
    reply: dict | None = None
    request_id: str | None = None


def register(s: Settings) -> list[str]:
    """The bridge's identity, as the operator (idempotent): its LOGIN role, CONNECT on shared_queue, its
    entry in bus.instances (flagged bridge) and its reply queues. Returns the reply queues."""
    from psycopg import sql

    from orchestrator.infra.migrate import ensure_role

    with connect(admin_conninfo(s, "postgres")) as admin:
        ensure_role(admin, s, BRIDGE_ROLE)
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE shared_queue TO {}").format(sql.Identifier(BRIDGE_ROLE)))
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        return [r["q"] for r in sq.execute("SELECT q FROM nats.ensure_bridge(%s, %s) AS q", (BRIDGE_ID, BRIDGE_ROLE))]


def error_reply(why: str, queue: str, subject: str, request_id: str | None = None) -> dict:
    """The reply a refused NATS request gets: why, and where it was sent."""
    return {"error": why, "request_id": request_id, "queue": queue, "subject": subject, "bridge": BRIDGE_ID}


class Ledger:
    """Takes NATS requests into pgmq (exactly once per key) and routes results back (nats.* functions)."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self.reply_queues: dict[str, str] = {}

    def reply_queue(self, queue: str) -> str:
        """The bridge's own reply queue for QUEUE's results (llm_requests -> llm_results_nats)."""
        if queue not in self.reply_queues:
            self.reply_queues[queue] = self.run(
                lambda c: c.execute("SELECT nats.reply_queue(%s) AS q", (queue,)).fetchone()["q"])
        return self.reply_queues[queue]

    def phase(self) -> int:
        return self.bus.run(lambda c: c.execute("SELECT nats.phase() AS p").fetchone()["p"])

    def reply_queue_names(self) -> list[str]:
        return [self.reply_queue(q) for q in ("llm_requests", "approval_requests", "question_requests", "job_requests")]

    def run(self, fn):
        """FN(conn) on a pooled connection, waiting at most DB_WAIT_S for one (PoolTimeout: the database is
        away, nothing was done, the caller says so or does not ack); a connection that died is retried once
        (if the first try committed after all, the second finds its ledger row: a duplicate)."""
        for attempt in (1, 2):
            try:
                with self.bus.pool.connection(timeout=DB_WAIT_S) as c:
                    return fn(c)
            except psycopg.OperationalError as e:
                if attempt == 2 or not db_away(e):
                    raise
                self.bus.pool.check()

    # -- requests --------------------------------------------------------------------------------
    def take(self, queue: str, subject: str, via: str, reply: str | None, data: bytes, key: str,
             stored_at: datetime | None = None) -> Taken:
        """Take one NATS request (its bytes DATA, its dedupe KEY; STORED_AT: when JetStream stored it) into
        QUEUE. Raises only when the database is away (the caller does not ack: JetStream redelivers)."""
        payload = data.decode("utf-8", "replace")
        try:
            body = json.loads(data)
            why = None if isinstance(body, dict) else f"the message is JSON but not an object ({type(body).__name__})"
        except ValueError as e:
            body, why = None, f"the message is not JSON ({e})"
        if why is not None:
            return self.refuse(queue, key, subject, via, reply, payload, why + "; send a JSON object as the bus's "
                               f"{queue} messages are (README, the bus)")
        try:
            self.reply_queue(queue)  # before the transaction: it needs no second connection
            taken = self.run(lambda c: self.enqueue(c, queue, key, subject, via, reply, body, stored_at))
        except (ValidationError, PermissionError) as e:  # the same words any bus client gets
            return self.refuse(queue, key, subject, via, reply, payload, str(e), body)
        if taken.status == "closed":  # after the cutover: recorded with its payload, the asker told where to go
            return self.refuse(queue, key, subject, via, reply, payload, taken.reply["error"], body)
        return taken

    def enqueue(self, c: psycopg.Connection, queue: str, key: str, subject: str, via: str, reply: str | None,
                body: dict, stored_at: datetime | None) -> Taken:
        """One transaction: the ledger row, the normal send as the bridge's role, its msg_id recorded."""
        with c.transaction():
            got = c.execute("SELECT nats.claim(%s, %s, %s, %s, %s, %s, %s) AS r",
                            (queue, key, subject, via, reply, Jsonb(body), stored_at)).fetchone()["r"]
            if got["status"] != "new":
                return Taken(got["status"], self.answer_again(got, queue, subject, key), got.get("request_id"))
            m = self.bus.stamp(queue, {**body, "reply_to": body.get("reply_to") or self.reply_queue(queue)})
            msg_id = self.bus.publish(queue, m, conn=c)
            c.execute("SELECT nats.enqueued(%s, %s, %s, %s)", (queue, key, m["id"], msg_id))
        return Taken("enqueued", None, m["id"])

    def answer_again(self, got: dict, queue: str, subject: str, key: str) -> dict | None:
        """What a request taken before gets now: nothing while its answer is on the way (it goes to this
        asker), else why not."""
        st, rid = got["status"], got.get("request_id")
        if st == "duplicate":
            return None
        if st == "answered":
            why = f"request {key} was already answered (at {got.get('answered_at')}); its answer went to its first asker"
        elif st == "rejected":
            why = f"request {key} was refused before: {got.get('error')}"
        elif st == "conflict":
            why = (f"id {key} was already used for a different request on {queue} (at {got.get('received_at')}); "
                   "send a new id")
        else:
            why = (f"the NATS bridge is in phase {got.get('phase')} of the migration (since {got.get('since')}) and "
                   f"takes no new NATS requests: send to the pgmq queue {queue} (docs/nats.md)")
        return error_reply(why, queue, subject, rid)

    def refuse(self, queue: str, key: str, subject: str, via: str, reply: str | None, payload: str, why: str,
               body: dict | None = None) -> Taken:
        """Record a refused request with WHY (nothing from NATS is dropped silently); the asker is told why."""
        self.bus.run(lambda c: c.execute("SELECT nats.reject(%s, %s, %s, %s, %s, %s, %s, %s)",
                                         (queue, key, subject, via, reply, payload, why,
                                          Jsonb(body) if body is not None else None)))
        log.info("NATS %s request %s refused: %s", subject, key, why)
        rid = body.get("id") if body is not None else None
        return Taken("rejected", error_reply(why, queue, subject, rid if isinstance(rid, str) else None))

    # -- results -----------------------------------------------------------------------------------
    def deliver(self, m: Message, publish: Callable[[str, bytes], None]) -> str:
        """Result M (on one of the bridge's reply queues) back to its NATS asker via PUBLISH(subject, data),
        then marked answered and acked in one transaction ('answered', or 'already' for a second result;
        asynchronous commit). A crash before that commit is durable publishes it again (at least once to
        NATS). A result
        for no bridged request is dead-lettered (Reject)."""
        rid = m.body.get("request_id")
        rows = self.bus.run(lambda c: c.execute("SELECT * FROM nats.reply_for(%s, %s)", (m.queue, rid)).fetchall())
        if not rows:
            raise Reject(f"no request bridged from NATS has id {rid!r}")
        r = rows[0]
        if r["status"] != "answered" and r["reply_subject"]:
            publish(r["reply_subject"], json.dumps(m.body, default=str).encode())

        def settle(c: psycopg.Connection) -> str:
            with c.transaction():
                # not waiting for the flush to disk: a commit lost in a crash brings the result back, and it
                # is published again, which at-least-once delivery to NATS allows (nexus settles alike)
                c.execute("SET LOCAL synchronous_commit = off")
                st = c.execute("SELECT nats.answered(%s, %s, %s, %s) AS s",
                               (r["queue"], r["request_key"], m.queue, m.msg_id)).fetchone()["s"]
                self.bus.ack(m, conn=c)
            return st
        return self.bus.run(settle)
