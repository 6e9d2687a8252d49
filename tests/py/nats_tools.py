"""A real nats-server for tests: a free loopback port, JetStream in a temp store dir, killed and restarted
at will; and the bridge started in-process as the daemon's `nats` worker builds it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


class NatsServer:
    def __init__(self, store: Path, jetstream: bool = True):
        self.binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port = free_port()
        self.store = store
        self.jetstream = jetstream
        self.proc: subprocess.Popen | None = None
        self.log = store / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(args, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port}: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (the store is what the disk has)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_bridge(s, env: dict, **kw):
    """The daemon's nats worker (orchestrator.nats.worker.build) with the NATS_* settings in ENV, started;
    stopped and closed on exit."""
    from orchestrator.nats.settings import NatsSettings
    from orchestrator.nats.worker import build

    bridge = build(s, NatsSettings.from_env(env), **kw).start()
    try:
        assert bridge.ready.wait(15), "the bridge did not connect to NATS"
        yield bridge
    finally:
        bridge.stop()
        bridge.ledger.bus.close()
        bridge.results_bus.close()
