"""Fault-injection helpers: an echo responder, a TCP proxy that can cut connections, result collection."""

from __future__ import annotations

import asyncio
import threading
import time

from orchestrator.core.bus import Bus


class EchoResponder:
    """A Nexus-like consumer: answers every llm_request on its reply_to (result + fenced ack in one txn)."""

    def __init__(self, bus: Bus, concurrency: int = 2):
        from orchestrator.core.supervisor import Supervisor, Worker

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


class DaemonProc:
    """`orchestrator daemon --only ONLY` as a real subprocess (own session, logs to LOG); kill() is kill -9."""

    def __init__(self, only: str, env: dict, log, grace: float | None = None):
        import os
        import subprocess
        import sys

        from helpers import ROOT

        self.log = log
        args = [sys.executable, "-m", "orchestrator.cli", "daemon", "--only", only]
        if grace is not None:
            args += ["--grace", str(grace)]
        with open(log, "a") as fh:
            self.p = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=fh, stderr=fh,
                                      start_new_session=True)

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"daemon exited with {self.p.returncode}:\n{self.text()}")
            if "daemon started" in self.text():
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon did not start within {timeout}s:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9: no shutdown code runs, in-flight messages stay invisible until their lease ends."""
        import signal

        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        import signal

        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.p.wait(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.kill()


def in_flight(owner_conn, queue: str, ids: list[str] | None = None) -> int:
    """Messages on QUEUE read by a consumer and not yet settled (invisible, read_ct > 0)."""
    sql = f"SELECT count(*) AS n FROM pgmq.q_{queue} WHERE read_ct > 0 AND vt > now()"
    if ids is not None:
        return owner_conn.execute(sql + " AND message->>'id' = ANY(%s)", (ids,)).fetchone()["n"]
    return owner_conn.execute(sql).fetchone()["n"]


def count_results(owner_conn, queues: tuple[str, ...], ids: list[str]) -> dict[str, int]:
    """Results per request_id for IDS on QUEUES (live + archive)."""
    parts = " UNION ALL ".join(f"SELECT message FROM pgmq.q_{q} UNION ALL SELECT message FROM pgmq.a_{q}"
                               for q in queues)
    rows = owner_conn.execute(f"SELECT message->>'request_id' AS rid, count(*) AS n FROM ({parts}) m "
                              "WHERE message->>'request_id' = ANY(%s) GROUP BY 1", (ids,)).fetchall()
    return {r["rid"]: r["n"] for r in rows}


def result_bodies(owner_conn, queues: tuple[str, ...], ids: list[str]) -> list[dict]:
    """The result messages for IDS on QUEUES (live + archive)."""
    parts = " UNION ALL ".join(f"SELECT message FROM pgmq.q_{q} UNION ALL SELECT message FROM pgmq.a_{q}"
                               for q in queues)
    return [r["message"] for r in owner_conn.execute(
        f"SELECT message FROM ({parts}) m WHERE message->>'request_id' = ANY(%s)", (ids,))]


def wait_exactly_once(owner_conn, queues: tuple[str, ...], ids: list[str], timeout: float,
                      settle_s: float = 1.0) -> dict[str, int]:
    """Wait until every id has a result (or TIMEOUT), then SETTLE_S more to catch late duplicates."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            counts = count_results(owner_conn, queues, ids)
        except Exception:  # noqa: BLE001 - the database may be restarting
            counts = {}
        if len(counts) == len(ids):
            break
        time.sleep(0.2)
    time.sleep(settle_s)
    return count_results(owner_conn, queues, ids)


def assert_exactly_once(counts: dict[str, int], ids: list[str]) -> None:
    missing = [i for i in ids if i not in counts]
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not missing, f"{len(missing)} of {len(ids)} requests never answered: {missing[:5]}"
    assert not dups, f"duplicate results: {list(dups.items())[:5]}"
