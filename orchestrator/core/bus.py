"""The typed pgmq client: one small class for every queue (no per-queue copies).

Each method is one call to a SQL function (pgmq.* or bus.*); rules live in SQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestrator.core.messages import Rules, ValidationError
from orchestrator.core.notify import Notifier, Waker
from orchestrator.infra.db import Undecodable, make_pool

log = logging.getLogger(__name__)

# Errors that mean "the database is away for now": retry with backoff, never crash.
TRANSIENT = (psycopg.OperationalError, PoolTimeout, psycopg.errors.AdminShutdown)


def db_away(e: BaseException) -> bool:
    """True when E means the database connection was lost or unavailable (not the message's fault):
    client-side connection failures, SQLSTATE class 08, 57P0x shutdowns, pool timeouts."""
    if isinstance(e, PoolTimeout):
        return True
    if isinstance(e, psycopg.OperationalError):
        st = e.sqlstate
        return st is None or st.startswith("08") or st.startswith("57P")
    return False


# A handler that lost the database mid-way gives the message back after this long (no attempt counted).
AWAY_RETRY_S = 1.0


class BusError(RuntimeError):
    """A bus operation failed; the message says what to do."""


class Reject(Exception):
    """Raised by a handler for a message that can never succeed: it is dead-lettered at once."""


@dataclass(frozen=True)
class Message:
    """One delivery of a message: (msg_id, read_ct) identifies this delivery for fenced acks."""

    queue: str
    msg_id: int
    read_ct: int
    enqueued_at: datetime
    vt: datetime
    body: dict
    headers: dict | None = None

    @property
    def id(self) -> str | None:
        return self.body.get("id")

    @property
    def sender(self) -> str | None:
        """The role that sent it, as the server recorded it at send (headers.sender); senders cannot forge it."""
        return (self.headers or {}).get("sender")

    @property
    def content_sha256(self) -> str | None:
        """The server's hash of what the message asks (ops.request_hash): dedupes compare it to catch id reuse."""
        return (self.headers or {}).get("content_sha256")


def _translate(e: psycopg.Error, queue: str) -> Exception:
    """SQL refusals become ValidationError / PermissionError with the server's message and hint."""
    diag = getattr(e, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(e)).strip()
    hint = diag.message_hint if diag and diag.message_hint else None
    full = f"{text} ({hint})" if hint else text
    if e.sqlstate in ("22023", "54000", "42P01", "22P02", "22P05", "P0001"):
        return ValidationError(full)
    if e.sqlstate == "42501":
        return PermissionError(f"{full}: this role may not do that on queue {queue} (see the flow table, DESIGN.md section 5)")
    return BusError(full)


def defer_wakes(conninfo: str) -> str:
    """CONNINFO for the bus's own pool: its inserts do not NOTIFY inside their commit (the bus_wake trigger
    skips a session with bus.wake = after_commit); the bus calls bus.wake() after the commit instead, so
    concurrent senders do not queue on NOTIFY's commit lock (docs/throughput.md)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    opts = conninfo_to_dict(conninfo).get("options") or ""
    return make_conninfo(conninfo, options=f"{opts} -c bus.wake=after_commit".strip())


# What a send inside a caller's own transaction runs: that transaction wakes the listeners at its commit
# (the bus cannot call bus.wake() after a commit it does not make).
SEND_IN_TX = "SELECT pgmq.send(%s, %s, %s) AS id FROM (SELECT set_config('bus.wake', 'in_commit', true)) w"


class Bus:
    """pgmq with validation, fenced acks, retries, dead letters, wake-ups and request/reply."""

    def __init__(self, conninfo: str, *, source: str | None = None, poll_ms: int = 1000, batch_size: int = 10,
                 vt_s: int = 30, pool: ConnectionPool | None = None, pool_size: int = 4, enabled: bool = True):
        self.conninfo = conninfo
        self.enabled = enabled  # SHARED_QUEUE_ENABLED: false makes every publish refuse, naming the variable
        self.source = source
        self.poll_s = poll_ms / 1000.0
        self.batch_size = batch_size
        self.vt_s = vt_s
        self.pool = pool or make_pool(defer_wakes(conninfo), max_size=pool_size, name=f"bus:{source or 'client'}")
        self._rules: Rules | None = None
        self._notifier: Notifier | None = None
        self._waker: Waker | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_role(cls, s, role: str, **kw):
        """The bus as ROLE, with the shared settings (poll, batch size, visibility timeout, SHARED_QUEUE_ENABLED)."""
        from orchestrator.infra.db import role_conninfo

        kw = {"poll_ms": s.poll_ms, "batch_size": s.batch_size, "vt_s": s.visibility_timeout_s,
              "enabled": s.shared_queue_enabled, **kw}
        return cls(role_conninfo(s, "shared_queue", role), **kw)

    def _refuse_when_off(self, queue: str) -> None:
        if not self.enabled:
            raise BusError(f"{queue}: the shared queue is turned off (SHARED_QUEUE_ENABLED=false), so nothing was "
                           "sent; set SHARED_QUEUE_ENABLED=true to send (SQL outboxes keep their messages meanwhile)")

    # -- plumbing -------------------------------------------------------------------
    def close(self) -> None:
        if self._notifier:
            self._notifier.close()
        if self._waker:
            self._waker.close()
        self.pool.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def rules(self) -> Rules:
        """Validation rules, read once from SQL (bus.message_rules())."""
        if self._rules is None:
            with self.pool.connection() as conn:
                self._rules = Rules(conn.execute("SELECT bus.message_rules() AS r").fetchone()["r"])
        return self._rules

    def refresh_rules(self) -> None:
        self._rules = None

    @property
    def notifier(self) -> Notifier:
        with self._lock:
            if self._notifier is None:
                self._notifier = Notifier(self.conninfo)
            return self._notifier

    def run(self, fn):
        """Run FN(conn) with a pooled connection; retry once on a connection that died under us."""
        for attempt in (1, 2):
            try:
                with self.pool.connection() as c:
                    return fn(c)
            except psycopg.OperationalError as e:
                if attempt == 2 or not db_away(e):
                    raise
                log.info("connection lost; probing the pool and retrying once")
                self.pool.check()  # drop every other dead idle connection too (e.g. after a restart)

    @property
    def waker(self) -> Waker:
        with self._lock:
            if self._waker is None:
                self._waker = Waker(self.conninfo)
            return self._waker

    def committed(self, sql: str, params, wake: list[str]) -> list[dict]:
        """Run SQL (one autocommit statement: one commit), then have the waker wake the listeners of WAKE."""
        rows = self.run(lambda c: c.execute(sql, params).fetchall())
        if wake:
            self.waker.wake(wake)
        return rows

    def stamp(self, queue: str, message: dict) -> dict:
        if self.source and isinstance(message, dict) and "source" not in message:
            message = {**message, "source": self.source}
        try:
            return self.rules.validate(queue, message)
        except ValidationError:
            if queue not in self.rules.queues:  # a queue created since we loaded the rules
                self.refresh_rules()
                return self.rules.validate(queue, message)
            raise

    # -- publishing ----------------------------------------------------------------
    def publish(self, queue: str, message: dict, *, delay_s: int = 0, conn: psycopg.Connection | None = None) -> int:
        """Validate and send one message; returns its msg_id. CONN lets callers send inside their transaction."""
        self._refuse_when_off(queue)
        m = self.stamp(queue, message)
        try:
            if conn is not None:
                return conn.execute(SEND_IN_TX, (queue, Jsonb(m), delay_s)).fetchone()["id"]
            return self.committed("SELECT pgmq.send(%s, %s, %s) AS id", (queue, Jsonb(m), delay_s),
                                  [] if delay_s else [queue])[0]["id"]
        except psycopg.errors.DiskFull as e:
            raise BusError(f"{queue}: the database server is out of disk space ({e.diag.message_primary}); "
                           "free space there and send again. Nothing was enqueued.") from e
        except psycopg.errors.Error as e:
            if db_away(e):  # not OperationalError in general: 54000 (too big, too deep) is one too
                raise
            raise _translate(e, queue) from e

    def publish_batch(self, queue: str, messages: Iterable[dict]) -> list[int]:
        """Validate all, then send all in one statement (all or nothing)."""
        self._refuse_when_off(queue)
        ms = [Jsonb(self.stamp(queue, m)) for m in messages]
        try:
            return [r["id"] for r in self.committed("SELECT pgmq.send_batch(%s, %s::jsonb[]) AS id", (queue, ms), [queue])]
        except psycopg.errors.Error as e:
            if db_away(e):  # not OperationalError in general: 54000 (too big, too deep) is one too
                raise
            raise _translate(e, queue) from e

    # -- consuming -----------------------------------------------------------------
    def read(self, queue: str, qty: int | None = None, vt_s: int | None = None,
             where: dict | None = None) -> list[Message]:
        """Read up to QTY visible messages, hiding them for VT_S seconds (pgmq.read)."""
        qty = qty or self.batch_size
        vt = vt_s if vt_s is not None else self.vt_s
        rows = self.run(lambda c: c.execute("SELECT * FROM bus.read(%s, %s, %s, %s)",
                                             (queue, vt, qty, Jsonb(where or {}))).fetchall())
        out = []
        for r in rows:
            m = Message(queue, r["msg_id"], r["read_ct"], r["enqueued_at"], r["vt"], r["message"], r["headers"])
            if not isinstance(m.body, dict):  # undecodable here (db.Undecodable) or not an object: never retried
                why = m.body if isinstance(m.body, Undecodable) else f"not a JSON object ({type(m.body).__name__})"
                log.error("%s msg %s cannot be decoded (%s); dead-lettered", queue, m.msg_id, why)
                self.safely(self.dead_letter, m, f"cannot be decoded by the consumer: {why}")
                continue
            out.append(m)
        return out

    def ack(self, msg: Message, conn: psycopg.Connection | None = None) -> str:
        """Fenced archive of MSG: 'acked', or 'stale'/'gone' when this delivery no longer holds it."""
        sql = "SELECT bus.ack(%s, %s, %s) AS r"
        if conn is not None:
            status = conn.execute(sql, (msg.queue, msg.msg_id, msg.read_ct)).fetchone()["r"]
        else:
            status = self.run(lambda c: c.execute(sql, (msg.queue, msg.msg_id, msg.read_ct)).fetchone()["r"])
        if status != "acked":
            log.warning("late ack ignored: %s msg %s read_ct %s is %s (redelivered after its visibility timeout)",
                        msg.queue, msg.msg_id, msg.read_ct, status)
        return status

    def ack_many(self, msgs: list[Message]) -> list[int]:
        """Fenced archive of a batch from one queue; returns the ids archived."""
        if not msgs:
            return []
        return self.run(lambda c: [r["id"] for r in c.execute(
            "SELECT bus.ack(%s, %s::bigint[], %s::int[]) AS id",
            (msgs[0].queue, [m.msg_id for m in msgs], [m.read_ct for m in msgs]))])

    def reply_and_ack(self, msg: Message, result_queue: str, result: dict) -> str:
        """Send RESULT and archive the request in one transaction; a stale delivery sends nothing."""
        status = self.reply_many([(msg, result_queue, result)])[0]
        if status.startswith("invalid: "):
            raise ValidationError(status.removeprefix("invalid: "))
        return status

    def reply_many(self, answers: list[tuple[Message, str, dict]]) -> list[str]:
        """Answer deliveries of one queue in one transaction (bus.reply): each (message, result queue, result)
        is acked (fenced) and, if acked, its result sent. Returns acked / stale / gone per answer; a result
        this bus refuses is not sent and its message not acked ('invalid: why')."""
        out: list[str | None] = [None] * len(answers)
        ok = []
        for i, (msg, queue, result) in enumerate(answers):
            try:
                ok.append((i, msg, queue, Jsonb(self.stamp(queue, result))))
            except ValidationError as e:
                out[i] = f"invalid: {e}"
        if ok:
            q = ok[0][1].queue
            try:
                rows = self.committed(
                    "SELECT * FROM bus.reply(%s, %s::bigint[], %s::int[], %s::text[], %s::jsonb[])",
                    (q, [a[1].msg_id for a in ok], [a[1].read_ct for a in ok], [a[2] for a in ok], [a[3] for a in ok]),
                    sorted({a[2] for a in ok}))
            except psycopg.errors.Error as e:
                if db_away(e):
                    raise
                raise _translate(e, ", ".join(sorted({a[2] for a in ok}))) from e
            for (i, msg, _q, _m), r in zip(ok, rows, strict=True):
                out[i] = r["status"]
                if r["status"] != "acked":
                    log.warning("result for %s msg %s not sent: this delivery is %s (another worker holds it)",
                                msg.queue, msg.msg_id, r["status"])
        return out

    def fail(self, msg: Message, error: str, max_attempts: int | None = None, backoff_s: float = 1.0) -> str:
        """A failed attempt: 'retry' after backoff, or 'dead_lettered' once attempts reach the limit."""
        with self.pool.connection() as c:
            return c.execute("SELECT bus.fail(%s, %s, %s, %s, %s, %s) AS r",
                             (msg.queue, msg.msg_id, msg.read_ct, error, max_attempts, backoff_s)).fetchone()["r"]

    def dead_letter(self, msg: Message, reason: str) -> str:
        """Move MSG to dead_letters now, with REASON."""
        with self.pool.connection() as c:
            return c.execute("SELECT bus.dead_letter(%s, %s, %s, %s) AS r",
                             (msg.queue, msg.msg_id, msg.read_ct, reason)).fetchone()["r"]

    def extend(self, msg: Message, seconds: float) -> str:
        """Extend this delivery's lease (long work)."""
        with self.pool.connection() as c:
            return c.execute("SELECT bus.set_lease(%s, %s, %s, %s) AS r",
                             (msg.queue, msg.msg_id, msg.read_ct, seconds)).fetchone()["r"]

    def give_back(self, msg: Message, seconds: float = 0) -> str:
        """Hand MSG back for redelivery after SECONDS without counting an attempt (bus.give_back): shutdown,
        the database lost mid-way, or another worker busy with the same request."""
        with self.pool.connection() as c:
            return c.execute("SELECT bus.give_back(%s, %s, %s, %s) AS r",
                             (msg.queue, msg.msg_id, msg.read_ct, seconds)).fetchone()["r"]

    def release(self, msg: Message) -> str:
        """Give MSG back for immediate redelivery (shutdown with work not started or not finished)."""
        return self.give_back(msg, 0)

    def wait_for(self, queue: str, since: int, timeout: float) -> bool:
        return self.notifier.wait(queue, since, timeout)

    def consume(self, queue: str, handler: Callable[[Message], None], *, stop: threading.Event,
                batch_size: int | None = None, on_idle: Callable[[], None] | None = None,
                in_flight: dict | None = None, on_done: Callable[[Message], None] | None = None,
                handle_batch: Callable[[list[Message], threading.Event], list[Message]] | None = None) -> None:
        """The consumer loop (the daemon's, the tests' and the benchmarks'): read QUEUE in batches until STOP
        is set and settle each message on its own: HANDLER's return acks, Reject dead-letters, any other
        error retries with backoff, a lost database hands it back. IN_FLIGHT (if given) holds the messages
        read and not yet settled, so a shutdown can give them back; ON_DONE is called after each one.
        HANDLE_BATCH (if given) takes a read of more than one message whole and settles each itself
        (e.g. one SQL call for all their answers); it returns the messages it handled.
        Wake-ups come from LISTEN; without one, the queue is polled every SHARED_QUEUE_POLL_MS."""
        self.notifier.subscribe(queue)
        delay = 0.1
        held = in_flight if in_flight is not None else {}
        while not stop.is_set():
            gen = self.notifier.generation(queue)
            try:
                msgs = self.read(queue, batch_size)
                delay = 0.1
            except TRANSIENT as e:
                log.warning("reading %s failed (%s); retrying in %.1fs", queue, type(e).__name__, delay)
                stop.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:  # noqa: BLE001 - a consumer never dies on one bad read
                log.exception("reading %s failed", queue)
                stop.wait(1.0)
                continue
            if not msgs:
                if on_idle:
                    on_idle()
                self.notifier.wait(queue, gen, self.poll_s)
                continue
            held.update({(m.queue, m.msg_id): m for m in msgs})
            if handle_batch is not None and len(msgs) > 1:
                self._batch(msgs, handle_batch, stop, held, on_done)
                continue
            for m in msgs:
                try:
                    if stop.is_set():
                        self.safely(self.release, m)
                        continue
                    self.handle(m, handler)
                    if on_done:
                        on_done(m)
                finally:
                    held.pop((m.queue, m.msg_id), None)

    @staticmethod
    def _batch(msgs: list[Message], handle_batch, stop: threading.Event, held: dict, on_done) -> None:
        done: list[Message] = []
        try:
            done = handle_batch(msgs, stop)
        except Exception:  # noqa: BLE001 - a consumer never dies on one batch: its messages come back after their timeout
            log.exception("handling a batch of %d from %s failed", len(msgs), msgs[0].queue)
        finally:
            for m in msgs:
                held.pop((m.queue, m.msg_id), None)
        for m in done if on_done else ():
            on_done(m)

    def handle(self, m: Message, handler: Callable[[Message], None]) -> None:
        """Run HANDLER on one delivery and settle it (ack / dead-letter / fail), surviving DB outages."""
        try:
            handler(m)
        except Reject as e:
            self.safely(self.dead_letter, m, f"rejected: {e}")
            return
        except Exception as e:  # noqa: BLE001 - every handler error is recorded on the message
            if self.away(m, e):
                return
            log.exception("handler failed on %s msg %s", m.queue, m.msg_id)
            self.safely(self.fail, m, f"{type(e).__name__}: {e}")
            return
        self.safely(self.ack, m)

    def away(self, m: Message, e: BaseException) -> bool:
        """If E is the database going away, give M back soon without counting a failed attempt.

        Counting it (bus.fail) let a burst of dropped connections dead-letter valid requests as
        "failed 5 times" (tests/py/test_chaos_workers.py)."""
        if not db_away(e):
            return False
        log.warning("%s msg %s: the database connection was lost mid-way (%s); redelivered in %.0fs, "
                    "not counted as a failed attempt", m.queue, m.msg_id, type(e).__name__, AWAY_RETRY_S)
        self.safely(self.give_back, m, AWAY_RETRY_S)
        return True

    def safely(self, fn, *args) -> str | None:
        """Settle a message; if the database is away, the visibility timeout brings it back later."""
        try:
            return fn(*args)
        except TRANSIENT as e:
            if db_away(e):
                log.warning("could not settle message (%s); it will be redelivered after its visibility timeout",
                            type(e).__name__)
            else:  # refused by the server (e.g. a limit): say why; the message comes back after its timeout
                log.error("could not settle message: %s; it will be redelivered after its visibility timeout",
                          str(e).strip().splitlines()[0])
            return None

    # -- request / reply ---------------------------------------------------------------
    def request(self, queue: str, message: dict, *, reply_to: str, timeout: float = 30.0) -> dict:
        """Publish MESSAGE with a correlation id and reply_to; wait for the reply carrying that request_id."""
        self.notifier.subscribe(reply_to)
        m = self.stamp(queue, {**message, "reply_to": reply_to})
        self.publish(queue, m)
        return self.await_reply(reply_to, m["id"], timeout=timeout)

    def await_reply(self, reply_to: str, request_id: str, timeout: float = 30.0,
                    store: Callable[[Message], str] | None = None) -> dict:
        """Wait for the message on REPLY_TO whose request_id is REQUEST_ID; archive and return it.

        The one wait-for-reply loop. Without STORE the reply is read and archived in one statement
        (bus.take: one commit). With STORE (an agent that keeps its results) the reply is read, STORE(m)
        records it, and only then is it acked, so a crash in between loses nothing: STORE says 'stored' or
        'already' (a duplicate: acked all the same), or 'conflict' (the reply answers other content under
        this id: it is dead-lettered with the reason and the wait goes on)."""
        self.notifier.subscribe(reply_to)
        deadline = time.monotonic() + timeout
        while True:
            gen = self.notifier.generation(reply_to)
            try:
                got = self._take_reply(reply_to, request_id, store)
            except TRANSIENT:
                got = None
            if got is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply on {reply_to} for request {request_id} within {timeout}s; "
                                   "is the consuming service running? (orchestrator status)")
            self.notifier.wait(reply_to, gen, min(left, self.poll_s))

    def _take_reply(self, reply_to: str, request_id: str, store) -> dict | None:
        if store is None:  # read and archive in one statement (bus.take): one commit, not two
            rows = self.run(lambda c: c.execute("SELECT message FROM bus.take(%s, %s)",
                                                (reply_to, Jsonb({"request_id": request_id}))).fetchall())
            return rows[0]["message"] if rows else None
        for m in self.read(reply_to, 1, vt_s=30, where={"request_id": request_id}):
            status = store(m)
            if status == "conflict":
                self.safely(self.dead_letter, m, f"result for request {request_id} answers other content (its "
                                                 "request_sha256 is not the hash of the request that was sent)")
                continue
            self.safely(self.ack, m)
            return m.body
        return None

    # -- thin aliases named as in seed 002 ---------------------------------------------------
    def publish_llm_request(self, request: dict) -> int:
        return self.publish("llm_requests", request)

    def publish_approval_request(self, request: dict) -> int:
        return self.publish("approval_requests", request)

    def publish_question_request(self, request: dict) -> int:
        return self.publish("question_requests", request)

    def publish_job_request(self, request: dict) -> int:
        return self.publish("job_requests", request)

    def read_llm_results(self, limit: int = 10, queue: str = "llm_results") -> list[Message]:
        return self.read(queue, limit)

    def read_approval_responses(self, limit: int = 10, queue: str = "approval_responses") -> list[Message]:
        return self.read(queue, limit)

    def read_question_responses(self, limit: int = 10, queue: str = "question_responses") -> list[Message]:
        return self.read(queue, limit)

    def read_job_results(self, limit: int = 10, queue: str = "job_results") -> list[Message]:
        return self.read(queue, limit)


class SelfSettlingBus(Bus):
    """For handlers that settle the message themselves (reply_and_ack, extend when busy): no ack follows.
    Reject -> dead letter at once; database away -> handed back without counting an attempt;
    anything else -> fail (backoff, dead letter after max_attempts)."""

    def handle(self, m: Message, handler: Callable[[Message], None]) -> None:
        try:
            handler(m)
        except Exception as e:  # noqa: BLE001 - recorded on the message, retried with backoff
            self.settle_failure(m, e)

    def settle_failure(self, m: Message, e: Exception) -> None:
        """Settle M after its handling raised E: Reject dead-letters it, the database away hands it back
        without counting an attempt, anything else is a failed attempt (backoff, dead letter at the limit)."""
        if isinstance(e, Reject):
            self.safely(self.dead_letter, m, f"rejected: {e}")
            return
        if self.away(m, e):
            return
        log.error("%s: handler failed on %s msg %s", self.source or "worker", m.queue, m.msg_id, exc_info=e)
        self.safely(self.fail, m, f"{type(e).__name__}: {e}")
