"""Helpers shared by tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORCH = [sys.executable, "-m", "orchestrator.cli"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `orchestrator ARGS...` in a subprocess (as a user would)."""
    r = subprocess.run([*ORCH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env={**os.environ, **(env or {})}, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"orchestrator {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def wait_until(cond, timeout: float, what: str, step: float = 0.05):
    """Poll COND until it returns something truthy (returned); AssertionError naming WHAT after TIMEOUT s.
    For tests that would otherwise sleep a fixed time to outwait a lease, a threshold or a schedule."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@contextmanager
def cron_job_paused(s, jobname: str, timeout: float = 60):
    """pg_cron job JOBNAME (e.g. 'singularity:consume_inbox') inactive inside the block, and no run of it
    in progress when the block starts (waited for); active again afterwards. For tests whose steps the
    scheduled run of the same procedure would interleave with."""
    from orchestrator.infra.db import admin_conninfo, connect

    with connect(admin_conninfo(s, "postgres")) as pg:
        [job] = pg.execute("SELECT jobid, active FROM cron.job WHERE jobname = %s", (jobname,)).fetchall()
        pg.execute("SELECT cron.alter_job(%s, active => false)", (job["jobid"],))
        try:
            # pg_cron starts jobs at the minute's tick and may not have seen the change if it is imminent:
            # past that tick first (never more than a few seconds), then wait for a run still in progress
            wait_until(lambda: 2 <= time.time() % 60 < 57, 6, "the minute's tick to pass", step=0.2)
            wait_until(lambda: not pg.execute("SELECT 1 FROM cron.job_run_details WHERE jobid = %s AND status IN "
                                              "('starting', 'running') AND start_time > now() - interval '10 minutes'",
                                              (job["jobid"],)).fetchone(),
                       timeout, f"the run of {jobname} in progress to finish")
            yield
        finally:
            pg.execute("SELECT cron.alter_job(%s, active => %s)", (job["jobid"], job["active"]))


class Receiver:
    """A real HTTP server on 127.0.0.1 recording JSON bodies; answers STATUS (settable)."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.status = 200
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                rec.bodies.append(json.loads(self.rfile.read(n)))
                rec.auth.append(self.headers.get("Authorization"))
                self.send_response(rec.status)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()
