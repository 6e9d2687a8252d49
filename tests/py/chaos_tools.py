"""Fault-injection helpers: an echo responder, a TCP proxy that can cut connections, result collection."""

from __future__ import annotations

import asyncio
import threading
import time

from orchestrator.bus import Bus


class EchoResponder:
    """A Nexus-like consumer: answers every llm_request on its reply_to (result + fenced ack in one txn)."""

    def __init__(self, bus: Bus, concurrency: int = 2):
        from orchestrator.daemon import Supervisor, Worker

        self.count = 0

        def handle(m):
            bus.reply_and_ack(m, m.body.get("reply_to", "llm_results"),
                              {"request_id": m.body["id"], "result": f"echo {m.body['agent_id']}"})
            self.count += 1

        self.sup = Supervisor([Worker(name="echo", bus=bus, concurrency=concurrency, queue="llm_requests",
                                      handle=handle)], grace_s=5)

    def __enter__(self):
        self.sup.start()
        return self

    def __exit__(self, *exc):
        self.sup.request_stop()
        self.sup.shutdown()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.sup.threads)


def collect_results(owner_conn, queue: str, expected: set[str], timeout: float) -> dict[str, int]:
    """Count results per request_id on QUEUE (live + archive) until all EXPECTED arrived or TIMEOUT."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            rows = owner_conn.execute(
                f"SELECT message->>'request_id' AS rid, count(*) AS n FROM ("
                f" SELECT message FROM pgmq.q_{queue} UNION ALL SELECT message FROM pgmq.a_{queue}) m "
                f"GROUP BY 1").fetchall()
            counts = {r["rid"]: r["n"] for r in rows}
            if expected <= set(counts):
                return counts
        except Exception:  # noqa: BLE001 - the database may be restarting
            pass
        time.sleep(0.25)
    return counts


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL; cut() drops every connection and refuses new ones."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self._cut = threading.Event()
        self._writers: set = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(reader, writer):
            try:
                while not reader.at_eof():
                    data = await reader.read(65536)
                    if not data or self._cut.is_set():
                        break
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader, writer):
            if self._cut.is_set():
                writer.close()
                return
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                return
            self._writers.update({writer, uw})
            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
            self._writers.discard(writer)
            self._writers.discard(uw)

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await self._closed.wait()

        self._closed = asyncio.Event()
        self._loop.run_until_complete(main())

    def cut(self) -> None:
        self._cut.set()

        def close_all():
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(close_all)

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._closed.set)
        self._thread.join(5)
