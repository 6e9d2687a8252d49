"""`orchestrator daemon`: one supervisor for the chosen workers.

Per-worker concurrency, graceful shutdown on SIGTERM/SIGINT (stop reading, finish in-flight work
within the grace period, release the rest for immediate redelivery), reconnects with backoff,
structured logs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from orchestrator.core import metrics
from orchestrator.core.bus import TRANSIENT, Bus, Message

log = logging.getLogger(__name__)
RUNNING: set = set()  # this process's started supervisors, for process_stats() (what heartbeats report)


@dataclass
class Worker:
    """A worker: either a queue consumer (queue + handle) or a periodic task (every_s + tick)."""

    name: str
    bus: Bus | None = None         # periodic workers that do not use the bus have none
    concurrency: int = 1
    queue: str | None = None
    every_s: float | None = None
    handle: object = None          # Callable[[Message], None] for consumers
    handle_batch: object = None    # Callable[[list[Message], Event], list[Message]]: a whole read at once (optional)
    tick: object = None            # Callable[[], None] for periodic workers
    on_stop: object = None         # Callable[[], None], called once at shutdown
    batch: int = 1                 # messages a consumer slot reads at once
    notice: str | None = None      # a line for the daemon's banner (e.g. the address a page is really served on)
    in_flight: dict = field(default_factory=dict)
    processed: int = 0
    failed: int = 0


class Supervisor:
    def __init__(self, workers: list[Worker], grace_s: float = 20.0):
        self.workers = workers
        self.grace_s = grace_s
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()

    # -- consumer threads ----------------------------------------------------------------
    def _consume(self, w: Worker, slot: int) -> None:
        def done(m: Message) -> None:
            w.processed += 1
            metrics.handled(m.queue, m.enqueued_at)

        w.bus.consume(w.queue, w.handle, stop=self.stop, batch_size=w.batch, in_flight=w.in_flight, on_done=done,
                      handle_batch=w.handle_batch)

    def _periodic(self, w: Worker) -> None:
        while not self.stop.is_set():
            try:
                w.tick()
            except TRANSIENT as e:
                log.warning("%s: database unavailable (%s)", w.name, type(e).__name__)
            except Exception:  # noqa: BLE001
                log.exception("%s: tick failed", w.name)
            self.stop.wait(w.every_s)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for w in self.workers:
            if w.queue:
                for i in range(w.concurrency):
                    t = threading.Thread(target=self._consume, args=(w, i), name=f"{w.name}-{i}", daemon=True)
                    self.threads.append(t)
            else:
                self.threads.append(threading.Thread(target=self._periodic, args=(w,), name=w.name, daemon=True))
        for t in self.threads:
            t.start()
        RUNNING.add(self)
        log.info("daemon started: %s", ", ".join(f"{w.name}x{w.concurrency}" if w.queue else w.name
                                                   for w in self.workers))

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if not self.stop.is_set():
            log.info("shutdown requested (%s): no new reads; finishing in-flight work for up to %.0fs",
                     signal.Signals(signum).name if signum else "stop", self.grace_s)
        self.stop.set()

    def shutdown(self) -> int:
        """Wait for in-flight work up to the grace period, release what is left; returns the exit code."""
        deadline = time.monotonic() + self.grace_s
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        leftovers = [m for w in self.workers for m in list(w.in_flight.values())]
        for m in leftovers:
            w = next(w for w in self.workers if w.queue == m.queue)
            status = w.bus.safely(w.bus.release, m)
            log.warning("released %s msg %s for immediate redelivery (%s)", m.queue, m.msg_id, status)
        for w in self.workers:
            if w.on_stop:
                try:
                    w.on_stop()
                except Exception:  # noqa: BLE001
                    log.exception("%s: on_stop failed", w.name)
        RUNNING.discard(self)
        log.info("daemon stopped (%d in-flight released)", len(leftovers))
        return 0

    def run_forever(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        while not self.stop.is_set():
            self.stop.wait(0.5)
        return self.shutdown()

    def stats(self) -> dict:
        return {w.name: {"processed": w.processed, "in_flight": len(w.in_flight)} for w in self.workers}


def process_stats() -> dict:
    """What every heartbeat of this process says about its daemon: each worker with its concurrency, the
    messages in flight and handled so far (over every running supervisor of this process)."""
    workers = [w for sup in list(RUNNING) for w in sup.workers]
    return {"workers": {w.name: w.concurrency for w in workers},
            "in_flight": sum(len(w.in_flight) for w in workers),
            "processed": sum(w.processed for w in workers)}
