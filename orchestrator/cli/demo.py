"""`orchestrator demo`: drive the seeds' flows through the running system, step by step, with latencies.

An agent of a Singularity instance gets a task from the SQL scheduler, asks the LLM (Nexus), runs code
(Genesis), asks for an approval and a question (answered through the HITL page's own HTTP endpoints,
or by a person with --interactive), records analysis results; the instance learns and publishes,
CentralCloud aggregates and sends the knowledge back, and the instance folds it in.

The workers the flow needs (nexus, hitl, genesis) run inside this process for the demo's duration;
a daemon already running (`make run`) simply shares the work, and its page answers if it holds the port.
"""

from __future__ import annotations

import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import httpx
from psycopg.types.json import Jsonb

from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo, service_role, system_id
from orchestrator.nexus.web.app import SYSTEM_HEADER

DEMO_USER = "demo"
NEEDED_WORKERS = ("nexus", "hitl", "genesis")


class Progress:
    """One line per step: a live elapsed-time counter while it runs (on a terminal), then its latency."""

    def __init__(self, total: int, out=sys.stdout):
        self.total, self.out, self.n = total, out, 0
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.rows: list[tuple[str, float, str]] = []

    def step(self, title: str, fn: Callable[[], str]) -> str:
        self.n += 1
        head = f"[{self.n}/{self.total}] {title}"
        done = threading.Event()
        t0 = time.perf_counter()

        def spin() -> None:
            frames = "|/-\\"
            i = 0
            while not done.wait(0.1):
                self.out.write(f"\r{head} {frames[i % 4]} {time.perf_counter() - t0:5.1f}s")
                self.out.flush()
                i += 1

        spinner = threading.Thread(target=spin, daemon=True) if self.tty else None
        if spinner:
            spinner.start()
        else:
            self.out.write(f"{head} ...\n")
        try:
            detail = fn()
        except Exception as e:
            done.set()
            self.out.write(f"\r{head}: FAILED after {time.perf_counter() - t0:.2f}s\n")
            raise DemoError(f"{title}: {e}") from e
        finally:
            done.set()
            if spinner:
                spinner.join()
        ms = (time.perf_counter() - t0) * 1000
        self.rows.append((title, ms, detail))
        self.out.write(f"\r{head}: {ms:8.1f} ms  {detail}\n" if self.tty else f"    {ms:8.1f} ms  {detail}\n")
        self.out.flush()
        return detail


class DemoError(RuntimeError):
    """A demo step failed; the message names the step and what went wrong."""


@contextmanager
def workers_in_process(s: Settings, names=NEEDED_WORKERS, extra=()):
    """Run the named workers (and the EXTRA ones, already built) in this process (a running daemon shares the
    work)."""
    from orchestrator.cli.workers import factories
    from orchestrator.core.supervisor import Supervisor

    registry = factories()
    missing = [n for n in names if n not in registry]
    if missing:
        raise DemoError(f"worker(s) {', '.join(missing)} are not installed; reinstall with `make setup`")
    sup = Supervisor([registry[n](s) for n in names] + list(extra), grace_s=5)
    sup.start()
    try:
        yield sup
    finally:
        sup.request_stop()
        sup.shutdown()


class HitlClient:
    """Decides approvals and answers questions through the HITL page's HTTP endpoints (sign-in + CSRF)."""

    def __init__(self, s: Settings, base_url: str):
        from orchestrator.nexus.passwords import hash_password

        self.base = base_url.rstrip("/")
        password = secrets.token_urlsafe(18)  # a fresh password per run: nothing to leak
        with connect(owner_conninfo(s, "nexus")) as c:
            c.execute("SELECT nexus.user_set(%s, %s)", (DEMO_USER, hash_password(password)))
        self.http = httpx.Client(base_url=self.base, timeout=10, follow_redirects=False)
        self._sign_in(password)

    @staticmethod
    def _csrf(html: str) -> str:
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        if not m:
            raise DemoError("the HITL page has no CSRF token in its form")
        return m.group(1)

    def _sign_in(self, password: str) -> None:
        r = self.http.get("/login")
        r = self.http.post("/login", data={"csrf_token": self._csrf(r.text), "username": DEMO_USER,
                                           "password": password, "next": "/approvals"})
        if r.status_code != 303 or "error" in r.headers.get("location", ""):
            raise DemoError(f"could not sign in to {self.base} (HTTP {r.status_code})")

    def wait_pending(self, kind: str, request_id: str, timeout: float) -> str:
        """The page's form token once REQUEST_ID is listed on the approvals/questions page."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.get(f"/{kind}")
            if request_id in r.text:
                return self._csrf(r.text)
            time.sleep(0.2)
        raise DemoError(f"request {request_id} never appeared on {self.base}/{kind}; is the hitl worker running?")

    def approve(self, request_id: str, timeout: float) -> None:
        token = self.wait_pending("approvals", request_id, timeout)
        r = self.http.post(f"/approvals/{request_id}", data={"csrf_token": token, "decision": "approve",
                                                            "comment": "looks good (orchestrator demo)"})
        if r.status_code != 303:
            raise DemoError(f"approving {request_id} failed: HTTP {r.status_code} {r.text[:200]}")

    def answer(self, request_id: str, response: str, timeout: float) -> None:
        token = self.wait_pending("questions", request_id, timeout)
        r = self.http.post(f"/questions/{request_id}", data={"csrf_token": token, "response": response})
        if r.status_code != 303:
            raise DemoError(f"answering {request_id} failed: HTTP {r.status_code} {r.text[:200]}")

    def close(self) -> None:
        self.http.close()


DIFF = """--- a/lib/greeter.py
+++ b/lib/greeter.py
@@ -1,2 +1,3 @@
 def greet(name):
-    return "hi " + name
+    # f-strings read better
+    return f"hi {name}"
"""

CODE = "import statistics\nprint('mean', statistics.mean([3, 5, 7]))\n"

PATTERNS = [
    {"patterns": [{"key": "python.fstring", "kind": "code_pattern", "packages": ["python"]},
                  {"key": "python.statistics.mean", "kind": "code_pattern", "packages": ["python"]}]},
    {"patterns": [{"key": "python.fstring", "kind": "code_pattern", "packages": ["python"]}]},
]


class Demo:
    """The demo's steps, each a method: an agent of INSTANCE gets a task, asks the LLM, runs code, asks for
    an approval and an answer, records results; the instance learns; CentralCloud aggregates; the
    knowledge comes back. SQ is the instance database as its service role."""

    def __init__(self, s: Settings, sq, *, instance: str, interactive: bool, timeout: float, out, web: str):
        self.s, self.sq, self.instance, self.interactive, self.timeout, self.out, self.web = (
            s, sq, instance, interactive, timeout, out, web)
        self.agent_id = f"demo-{secrets.token_hex(3)}"
        self.hitl: HitlClient | None = None
        self.agent = None
        self.task: dict = {}
        self.steps = [("SQL scheduler assigns a task", self.assign), ("agent asks the LLM (Nexus)", self.ask_llm),
                      ("agent runs code (Genesis sandbox)", self.run_code), ("approval via the HITL page", self.approval),
                      ("question via the HITL page", self.question), ("analysis results recorded", self.record),
                      ("instance learns and queues patterns", self.learn), ("outbox drained to shared_queue", self.drain),
                      ("CentralCloud aggregates, sends knowledge back", self.aggregate),
                      ("instance folds the knowledge in", self.fold_in), ("done", self.summary)]
        self.progress = Progress(total=len(self.steps), out=out)

    def run(self) -> list[tuple[str, float, str]]:
        try:
            if not self.interactive:
                self.hitl = HitlClient(self.s, self.web)
            for title, fn in self.steps:
                self.progress.step(title, fn)
        finally:
            if self.hitl:
                self.hitl.close()
            if self.agent:
                self.agent.close()
        return self.progress.rows

    def assign(self) -> str:
        # The demo's agent joins the instance's agents; the SQL scheduler picks who gets the task
        # (another agent with free capacity may) and the demo then plays that agent.
        from orchestrator.singularity.agent import AgentClient

        sq = self.sq
        sq.execute("INSERT INTO core.agents (id, capacity) VALUES (%s, 2)", (self.agent_id,))
        row = sq.execute("INSERT INTO core.tasks (id, kind, payload, priority) VALUES (ops.ulid(), 'refactor', %s, "
                         "1000) RETURNING id", (Jsonb({"file": "lib/greeter.py"}),)).fetchone()
        self.task["id"] = row["id"]
        n = sq.execute("SELECT core.assign_pending_tasks() AS n").fetchone()["n"]
        got = sq.execute("SELECT status, assigned_agent FROM core.tasks WHERE id = %s", (self.task["id"],)).fetchone()
        if got["assigned_agent"] is None:
            raise DemoError(f"task {self.task['id']} is still {got['status']}: no active agent has free capacity")
        self.task["agent"] = got["assigned_agent"]
        self.agent = AgentClient(self.task["agent"], instance=self.instance, s=self.s)
        return f"agent {self.task['agent']} got task {self.task['id']} ({n} assigned this run)"

    def ask_llm(self) -> str:
        r = self.agent.ask_llm([{"role": "user", "content": "How should greet() format its string?"}],
                               task_type="chat", timeout=self.timeout)
        if r.get("error"):
            raise DemoError(r["error"])
        return f"{r.get('model')}: {_short(str(r.get('result')), 60)!r}"

    def run_code(self) -> str:
        r = self.agent.run_job(CODE, "python", timeout=self.timeout)
        if r.get("exit_code") != 0:
            raise DemoError(f"exit {r.get('exit_code')}: {r.get('error') or r.get('output')}")
        return f"exit 0, output {str(r.get('output')).strip()!r}"

    def _wait_for_person(self, rid: str, page: str, decide) -> dict:
        """The agent's result for RID: a person decides on PAGE (--interactive), or DECIDE does it now."""
        if self.interactive:
            self.out.write(f"\n    waiting for a person: decide it at {self.web}/{page} (up to {self.timeout:g} s)\n")
        else:
            decide(rid)
        return self.agent.result(rid, timeout=self.timeout)

    def approval(self) -> str:
        rid = self.agent.send("approval", {"file_path": "lib/greeter.py", "diff": DIFF, "reason": "use an f-string"})
        r = self._wait_for_person(rid, "approvals", lambda i: self.hitl.approve(i, self.timeout))
        return f"approved={r.get('approved')} by {r.get('decided_by')}"

    def question(self) -> str:
        rid = self.agent.send("question", {"question": "Ship the refactor today?", "options": ["yes", "no"]})
        r = self._wait_for_person(rid, "questions", lambda i: self.hitl.answer(i, "yes", self.timeout))
        return f"{r.get('response')!r} from {r.get('answered_by')}"

    def record(self) -> str:
        for body in PATTERNS:
            self.sq.execute("INSERT INTO core.analysis_results (agent_id, result, confidence) VALUES (%s, %s, 0.9)",
                            (self.task["agent"], Jsonb(body)))
        self.sq.execute("SELECT core.finish_task(%s, %s)", (self.task["id"], Jsonb({"ok": True})))
        return f"{len(PATTERNS)} analysis results, task {self.task['id']} completed"

    def job(self, name: str) -> str:
        r = self.sq.execute("SELECT core.run_job(%s) AS r", (name,)).fetchone()["r"] or ""
        if r.startswith("failed"):
            raise DemoError(f"{name} {r}")
        return _short(r)

    def learn(self) -> str:
        return f"learn_patterns {self.job('learn_patterns')}; sync_learning {self.job('sync_learning')}"

    def drain(self) -> str:
        return f"drain_outbox {self.job('drain_outbox')}"

    def aggregate(self) -> str:
        from orchestrator.centralcloud.jobs import run_job

        a = run_job(self.s, "aggregate")
        b = run_job(self.s, "pattern-sync")
        return f"aggregate {_short(a)}; pattern-sync {_short(b)}"

    def fold_in(self) -> str:
        r = self.job("consume_inbox")
        n = self.sq.execute("SELECT count(*) AS n FROM core.global_knowledge WHERE key = 'python.fstring'").fetchone()["n"]
        if not n:
            raise DemoError("the aggregated pattern python.fstring did not reach the instance's knowledge")
        return f"consume_inbox {r}; python.fstring is in global_knowledge"

    def summary(self) -> str:
        rows = self.progress.rows
        return f"{len(rows)} steps before this one, {sum(r[1] for r in rows) / 1000:.1f} s in all"


def run(s: Settings, instance: str = "default", interactive: bool = False, timeout: float = 60.0,
        out=sys.stdout) -> list[tuple[str, float, str]]:
    """Run the demo; returns (step, ms, detail) rows. Raises DemoError naming the step that failed."""
    db = "singularity" if instance == "default" else f"singularity_{instance}"
    # the instance's database first: with the server down this fails at once, before any worker starts
    with connect(role_conninfo(s, db, service_role("singularity", instance))) as sq:
        web, page = web_url(), ()
        names = tuple(n for n in NEEDED_WORKERS if n != "hitl")
        owner = _page_owner(web)
        if owner == system_id(role_conninfo(s, "nexus", "svc_nexus")):  # a running daemon (make run) serves it
            out.write(f"using the page of the running daemon at {web}/\n")
        else:
            if owner is not None:
                out.write(f"the page at {web}/ belongs to another system (another checkout's daemon?); this demo "
                          "serves its own\n")
            worker, web = own_page(s)
            page = (worker,)
            out.write(f"web page {web}/ (served by this demo)\n")
        with workers_in_process(s, names, extra=page):
            return Demo(s, sq, instance=instance, interactive=interactive, timeout=timeout, out=out, web=web).run()


def own_page(s: Settings):
    """(hitl worker, its URL): the page on NEXUS_WEB_PORT when that is free, else on a free port."""
    from orchestrator.nexus.hitl_worker import build
    from orchestrator.nexus.settings import NexusSettings

    ns = NexusSettings.from_env()
    _hitl, server, worker = build(s, ns=ns, port=ns.web_port if _can_listen(ns.web_host, ns.web_port) else 0)
    try:
        server.start(required=True)
    except SystemExit:
        worker.on_stop()
        raise
    return worker, server.url


def _can_listen(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _short(v: object, width: int = 80) -> str:
    """V on one line of at most WIDTH characters, cut at a word with an ellipsis."""
    text = " ".join((v if isinstance(v, str) else str(v)).split())
    if len(text) <= width:
        return text
    cut = text[:width - 1].rsplit(" ", 1)[0] if " " in text[:width - 1] else text[:width - 1]
    return cut + "…"


def _page_owner(base: str) -> str | None:
    """Whose page answers at BASE (its x-orchestrator-system header; "" for a page that sends none), or None when
    nothing does."""
    try:
        r = httpx.get(f"{base}/login", timeout=2)
    except httpx.HTTPError:
        return None
    return r.headers.get(SYSTEM_HEADER, "") if r.status_code == 200 else ""


def web_url() -> str:
    """Where the daemon's page is (NEXUS_WEB_HOST, NEXUS_WEB_PORT)."""
    from orchestrator.nexus.settings import NexusSettings

    return NexusSettings.from_env().web_url
