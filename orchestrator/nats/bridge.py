"""The NATS side of the bridge: one asyncio loop in a thread of its own.

- core mode: subscriptions (queue group `orchestrator-nats-bridge`) on the request subjects; each
  request is taken into pgmq (Ledger.take) and a refused one is answered with why; the result goes to
  the request's reply subject (`nc.request`). At-most-once: what is sent while no bridge listens, or
  while PostgreSQL is away (the asker is told), is not kept (NATS core keeps nothing).
- jetstream mode: the stream NATS_STREAM stores the request subjects (agents `js.publish` and get the
  stream's ack; the subject for the result goes in the `Reply-To` header). A durable pull consumer
  takes each stored message and acks it only after its pgmq commit: a crash in between redelivers it
  and the ledger makes it a duplicate; PostgreSQL away: not acked, redelivered.
- results on the bridge's reply queues go back to each request's NATS reply subject (threads running the
  bus's one consumer loop; Ledger.deliver).
- phase 2 stops the core subscriptions; the stream is drained of what it stored before the cutover
  (later messages are recorded as refused, and told so); phase 3 takes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import uuid

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from orchestrator.core.bus import TRANSIENT, Message, SelfSettlingBus
from orchestrator.nats.ledger import Ledger, Taken, error_reply
from orchestrator.nats.settings import NatsSettings

log = logging.getLogger(__name__)

QUEUE_GROUP = "orchestrator-nats-bridge"
DURABLE = "orchestrator-nats-bridge"
REPLY_HEADER = "Reply-To"   # jetstream mode: where a stored request's result goes
MAX_KEY = 200
RESULT_SLOTS = 2            # consumer threads per reply queue (results go back over NATS in parallel)


def request_key(data: bytes, headers: dict | None, fallback: str) -> str:
    """The dedupe key: the message's `id`, else its Nats-Msg-Id header, else FALLBACK (a stored message's
    stream sequence, stable across redeliveries; for core NATS a fresh one)."""
    try:
        body = json.loads(data)
        mid = body.get("id") if isinstance(body, dict) else None
    except ValueError:
        mid = None
    key = mid if isinstance(mid, str) and mid else (headers or {}).get("Nats-Msg-Id") or fallback
    return key if len(key) <= MAX_KEY else "sha:" + hashlib.sha256(key.encode()).hexdigest()


class Bridge:
    """NATS <-> pgmq for one daemon. start() runs it in threads; stop() ends it."""

    def __init__(self, ns: NatsSettings, ledger: Ledger, results_bus: SelfSettlingBus, concurrency: int = 8,
                 ack_wait_s: float = 30.0):
        self.ns = ns
        self.ack_wait_s = ack_wait_s
        self.ledger = ledger
        self.results_bus = results_bus
        self.concurrency = concurrency
        self.stopping = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.nc = None
        self.subs: list = []
        self.phase = 1
        self.counts = {"taken": 0, "refused": 0, "replied": 0}
        self.threads: list[threading.Thread] = []
        self.ready = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> Bridge:
        self.phase = self.ledger.phase()
        t = threading.Thread(target=lambda: asyncio.run(self.main()), name="nats-bridge", daemon=True)
        self.threads.append(t)
        for q in self.ledger.reply_queue_names():
            for i in range(RESULT_SLOTS):
                self.threads.append(threading.Thread(target=self.results, args=(q,), name=f"nats-{q}-{i}", daemon=True))
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)

    def tick(self) -> None:
        """The daemon's periodic check: the phase (shared_queue's nats.state) and the loop's health."""
        self.phase = self.ledger.phase()
        if not self.threads[0].is_alive() and not self.stopping.is_set():
            log.error("the NATS bridge loop stopped; restarting it")
            self.threads[0] = threading.Thread(target=lambda: asyncio.run(self.main()), name="nats-bridge",
                                               daemon=True)
            self.threads[0].start()

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.gate = asyncio.Semaphore(self.concurrency)
        await self.connect()
        if self.stopping.is_set():
            return
        try:
            await self.apply_phase()
            if self.ns.mode == "jetstream":
                await self.ensure_stream(self.nc.jetstream())
            else:
                await self.warn_stream_left()
            self.ready.set()
        except Exception as e:  # noqa: BLE001 - the loops below retry
            log.warning("NATS bridge setup: %s; retrying", e or type(e).__name__)
        tasks = [asyncio.create_task(self.follow_phase())]
        if self.ns.mode == "jetstream":
            tasks.append(asyncio.create_task(self.drain()))
        self.ready.set()
        while not self.stopping.is_set():
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.nc is not None:
            await self.nc.drain()

    async def connect(self) -> None:
        """Connect, retrying with backoff while the server is away; nats-py reconnects by itself after."""
        delay = 0.2
        while not self.stopping.is_set():
            try:
                self.nc = await nats.connect(
                    servers=[u.strip() for u in self.ns.url.split(",")], name="orchestrator-nats-bridge",
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
                    error_cb=self.on_error, disconnected_cb=self.on_disconnect, reconnected_cb=self.on_reconnect)
                log.info("NATS bridge connected to %s (%s mode, phase %d)", self.nc.connected_url.netloc,
                         self.ns.mode, self.phase)
                return
            except Exception as e:  # noqa: BLE001 - the server may come later
                log.warning("NATS at %s unreachable (%s); retrying in %.1fs", self.ns.url, e or type(e).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def on_error(self, e: Exception) -> None:
        log.warning("NATS: %s", e or type(e).__name__)

    async def on_disconnect(self) -> None:
        log.warning("NATS bridge disconnected; reconnecting")

    async def on_reconnect(self) -> None:
        log.info("NATS bridge reconnected to %s", self.nc.connected_url.netloc)

    async def follow_phase(self) -> None:
        """The phase from shared_queue every second, and the subscriptions it asks for."""
        while True:
            try:
                self.phase = await asyncio.to_thread(self.ledger.phase)
                await self.apply_phase()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - PostgreSQL or NATS away: the next round retries
                log.warning("NATS bridge phase check: %s", e or type(e).__name__)
            await asyncio.sleep(1.0)

    async def apply_phase(self) -> None:
        """Core subscriptions exist in phase 1 only (phase 2: agents publish to pgmq)."""
        if self.phase == 1 and self.ns.mode == "core" and not self.subs:
            for q, subj in self.ns.subjects.items():
                self.subs.append(await self.nc.subscribe(subj, queue=QUEUE_GROUP, cb=self.on_core_factory(q)))
            await self.nc.flush()
            log.info("NATS bridge takes requests on %s (core NATS: at-most-once)", ", ".join(self.ns.subjects.values()))
        elif self.phase >= 2 and self.subs:
            for sub in self.subs:
                await sub.unsubscribe()
            self.subs = []
            log.info("NATS bridge in phase %d: no new NATS requests are taken", self.phase)

    # -- requests -------------------------------------------------------------------------------------
    def on_core_factory(self, queue: str):
        async def on_core(msg) -> None:
            asyncio.create_task(self.take_core(queue, msg))
        return on_core

    async def take(self, queue: str, msg, via: str, reply: str | None, key: str, stored_at=None) -> Taken | None:
        """Ledger.take in a thread (psycopg is synchronous); None when the database is away."""
        async with self.gate:
            try:
                taken = await asyncio.to_thread(self.ledger.take, queue, msg.subject, via, reply, msg.data, key,
                                                stored_at)
            except TRANSIENT as e:
                log.warning("NATS %s request %s not taken: the database is away (%s)", msg.subject, key,
                            type(e).__name__)
                return None
        self.counts["refused" if taken.status == "rejected" else "taken"] += 1
        return taken

    async def take_core(self, queue: str, msg) -> None:
        key = request_key(msg.data, msg.headers, "core:" + uuid.uuid4().hex)
        taken = await self.take(queue, msg, "core", msg.reply or None, key)
        if taken is None:  # core NATS keeps nothing: the asker must send again
            taken = Taken("unavailable", error_reply("not enqueued: the bus's database is unavailable; send again",
                                                     queue, msg.subject))
        await self.tell(msg.reply, taken)

    async def tell(self, subject: str | None, taken: Taken) -> None:
        """A refused request's asker is told why (best effort: NATS core)."""
        if taken.reply is not None and subject:
            try:
                await self.nc.publish(subject, json.dumps(taken.reply).encode())
            except Exception as e:  # noqa: BLE001
                log.warning("NATS reply to %s failed: %s", subject, e)

    async def take_stored(self, queue: str, msg) -> None:
        """A JetStream message: acked only once it is in pgmq (or recorded as refused)."""
        md = msg.metadata
        key = request_key(msg.data, msg.headers, f"js:{md.stream}:{md.sequence.stream}")
        reply = (msg.headers or {}).get(REPLY_HEADER)
        taken = await self.take(queue, msg, "jetstream", reply, key, md.timestamp)
        try:
            if taken is None:
                await msg.nak(delay=1.0)
            else:
                await self.tell(reply, taken)
                await msg.ack()
        except Exception as e:  # noqa: BLE001 - not acked: redelivered after ack_wait, then a duplicate
            log.warning("NATS ack of stream seq %s failed (%s); it will be redelivered", msg.metadata.sequence.stream, e)

    async def ensure_stream(self, js) -> None:
        cfg = StreamConfig(name=self.ns.stream, subjects=list(self.ns.subjects.values()), storage=StorageType.FILE)
        try:
            await js.stream_info(self.ns.stream)
            await js.update_stream(cfg)
        except nats.js.errors.NotFoundError:
            await js.add_stream(cfg)
        try:  # an existing durable consumer is kept as it is (its position and its pending acks)
            await js.consumer_info(self.ns.stream, DURABLE)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(self.ns.stream, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT,
                                                                 ack_wait=self.ack_wait_s, max_deliver=-1))

    async def warn_stream_left(self) -> None:
        """Core mode with the JetStream stream of an earlier jetstream run still there: it captures the
        subjects and answers every `nc.request` with its own ack before the bridge can."""
        try:
            await self.nc.jetstream().stream_info(self.ns.stream)
        except Exception:  # noqa: BLE001 - no stream (or no JetStream): nothing to say
            return
        log.warning("NATS stream %s still captures the request subjects: in core mode agents' nc.request gets "
                    "the stream's ack instead of the answer; drain it (NATS_MODE=jetstream, phase 2) and delete "
                    "it (nats stream rm %s)", self.ns.stream, self.ns.stream)

    async def drain(self) -> None:
        """The stream into pgmq, in phases 1 and 2; retries while NATS is away."""
        psub, delay = None, 0.2
        while True:
            try:
                if psub is None:
                    js = self.nc.jetstream()
                    await self.ensure_stream(js)
                    psub = await js.pull_subscribe_bind(durable=DURABLE, stream=self.ns.stream)
                    delay = 0.2
                if self.phase >= 3:
                    await asyncio.sleep(0.5)
                    continue
                msgs = await psub.fetch(batch=32, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - NATS away or restarting: bind again after a while
                log.warning("JetStream drain: %s; retrying in %.1fs", e or type(e).__name__, delay)
                psub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            await asyncio.gather(*(self.take_stored(self.ns.queue_of(m.subject), m) for m in msgs))

    # -- results --------------------------------------------------------------------------------------
    def results(self, queue: str) -> None:
        """Results on reply queue QUEUE back over NATS (the bus's one consumer loop; deliver settles)."""
        self.results_bus.consume(queue, self.deliver, stop=self.stopping)

    def deliver(self, m: Message) -> None:
        """One result to its asker, then acked. NATS away: handed back without counting an attempt; a
        result for no bridged request: dead-lettered (Reject); other errors: retried with backoff."""
        if self.nc is None or not self.nc.is_connected:
            self.results_bus.give_back(m, 1.0)
            return
        self.ledger.deliver(m, self.publish)  # acks it with the ledger's answered mark, in one transaction
        self.counts["replied"] += 1

    def publish(self, subject: str, data: bytes) -> None:
        """Publish from a worker thread and wait until NATS has it (flush), or raise."""
        if self.loop is None or self.nc is None or not self.nc.is_connected:
            raise ConnectionError("NATS is not connected; the result is retried")

        async def send() -> None:
            await self.nc.publish(subject, data)
            await self.nc.flush(timeout=2)

        asyncio.run_coroutine_threadsafe(send(), self.loop).result(timeout=5)


async def stream_backlog(ns: NatsSettings, timeout: float = 3.0) -> dict:
    """What the JetStream stream still holds for the bridge: {'pending', 'unacked', 'messages'}, or
    {'error'} when NATS cannot be asked."""
    try:
        nc = await nats.connect(servers=[u.strip() for u in ns.url.split(",")], connect_timeout=timeout,
                                max_reconnect_attempts=0, allow_reconnect=False)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return {"error": f"NATS at {ns.url} unreachable: {e or type(e).__name__}"}
    try:
        js = nc.jetstream()
        try:
            si = await js.stream_info(ns.stream)
        except nats.js.errors.NotFoundError:
            return {"pending": 0, "unacked": 0, "messages": 0, "stream": None}
        try:
            ci = await js.consumer_info(ns.stream, DURABLE)
            pending, unacked = ci.num_pending, ci.num_ack_pending
        except nats.js.errors.NotFoundError:
            pending, unacked = si.state.messages, 0
        return {"pending": pending, "unacked": unacked, "messages": si.state.messages, "stream": ns.stream}
    except Exception as e:  # noqa: BLE001
        return {"error": f"JetStream: {e or type(e).__name__}"}
    finally:
        await nc.close()
