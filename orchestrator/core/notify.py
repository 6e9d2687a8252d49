"""LISTEN-based wake-ups on pgmq insert notifications, shared by every consumer in a process.

One connection, one thread. Waiters take a generation number before they read a queue and wait
until it changes, so a notification that arrives between the read and the wait is never lost.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

log = logging.getLogger(__name__)


def channel(queue: str) -> str:
    """pgmq's insert notification channel for QUEUE."""
    return f"pgmq.q_{queue}.INSERT"


class Notifier:
    def __init__(self, conninfo: str):
        self._conninfo = conninfo
        self._cond = threading.Condition()
        self._gen: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._listening: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def subscribe(self, queue: str, timeout: float = 10.0) -> None:
        """Start listening to QUEUE's inserts; returns once LISTEN is in effect (or after TIMEOUT)."""
        ch = channel(queue)
        with self._cond:
            if ch in self._listening:
                return
            self._wanted.add(ch)
            self._gen.setdefault(ch, 0)
            self._cond.wait_for(lambda: ch in self._listening or self._stop.is_set(), timeout)

    def generation(self, queue: str) -> int:
        with self._cond:
            return self._gen.get(channel(queue), 0)

    def wait(self, queue: str, since: int, timeout: float) -> bool:
        """Wait until QUEUE has had an insert after generation SINCE; False on timeout."""
        ch = channel(queue)
        with self._cond:
            return self._cond.wait_for(lambda: self._gen.get(ch, 0) != since or self._stop.is_set(), timeout)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=3)

    def _bump_all(self) -> None:
        with self._cond:
            for ch in self._gen:
                self._gen[ch] += 1
            self._cond.notify_all()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    with self._cond:
                        self._listening.clear()
                    delay = 0.1
                    self._bump_all()  # we may have missed notifications while disconnected
                    while not self._stop.is_set():
                        with self._cond:
                            todo = self._wanted - self._listening
                        for ch in todo:
                            conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(ch)))
                            with self._cond:
                                self._listening.add(ch)
                                self._cond.notify_all()
                        for n in conn.notifies(timeout=0.2):
                            with self._cond:
                                self._gen[n.channel] = self._gen.get(n.channel, 0) + 1
                                self._cond.notify_all()
            except psycopg.Error as e:
                if self._stop.is_set():
                    break
                log.warning("notification connection lost (%s); reconnecting in %.1fs",
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, delay)
                self._bump_all()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


# After sending a wake-up the waker gathers for this long before the next: a burst of publishes costs a
# few wake-ups, not one each; an idle queue's first message is still woken for at once.
WAKE_GATHER_S = 0.002


class Waker:
    """Wakes the listeners of queues this process inserted into, after the inserting commit, from a thread
    of its own over its own connection (bus.wake): a publish does not wait for it, its commit does not
    hold NOTIFY's database-wide commit lock, and the wake-ups of a burst of publishes go out in one call.
    A wake-up lost with this process costs a consumer one poll interval, never a message."""

    def __init__(self, conninfo: str):
        self._conninfo = conninfo
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="waker", daemon=True)
        self._thread.start()

    def wake(self, queues) -> None:
        """Wake QUEUES' listeners soon (call it after the commit that inserted into them)."""
        with self._cond:
            self._pending.update(queues)
            self._cond.notify()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=3)

    def _take(self) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._stop.is_set())
            out, self._pending = sorted(self._pending), set()
            return out

    def _run(self) -> None:
        delay, conn = 0.1, None
        while not self._stop.is_set():
            queues = self._take()
            if not queues:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._conninfo, autocommit=True)
                conn.execute("SELECT bus.wake(%s)", (queues,))
                delay = 0.1
                self._stop.wait(WAKE_GATHER_S)
            except psycopg.Error as e:  # the listeners poll meanwhile: late, never lost
                log.warning("wake-up of %s not sent (%s); consumers find the messages at their next poll",
                            ", ".join(queues), str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                conn = None
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
        if conn is not None:
            conn.close()
