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
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import httpx
from psycopg.types.json import Jsonb

from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo, service_role

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
def workers_in_process(s: Settings, names=NEEDED_WORKERS):
    """Run the named workers in this process (a running daemon shares the work)."""
    from orchestrator.cli.workers import factories
    from orchestrator.core.supervisor import Supervisor

    registry = factories()
    missing = [n for n in names if n not in registry]
    if missing:
        raise DemoError(f"worker(s) {', '.join(missing)} are not installed; reinstall with `make setup`")
    sup = Supervisor([registry[n](s) for n in names], grace_s=5)
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


def run(s: Settings, instance: str = "default", interactive: bool = False, timeout: float = 60.0,
        out=sys.stdout) -> list[tuple[str, float, str]]:
    """Run the demo; returns (step, ms, detail) rows. Raises DemoError naming the step that failed."""
    from orchestrator.centralcloud.jobs import run_job
    from orchestrator.singularity.agent import AgentClient

    db = "singularity" if instance == "default" else f"singularity_{instance}"
    role = service_role("singularity", instance)
    agent_id = f"demo-{secrets.token_hex(3)}"
    p = Progress(total=11, out=out)
    web = web_url()
    names = NEEDED_WORKERS
    if _page_is_up(web):  # a running daemon (make run) serves the page: use it instead of a second one
        names = tuple(n for n in NEEDED_WORKERS if n != "hitl")
        out.write(f"using the page of the running daemon at {web}\n")
    with workers_in_process(s, names), connect(role_conninfo(s, db, role)) as sq:
        hitl: HitlClient | None = None
        task: dict = {}
        agent: AgentClient | None = None

        def assign() -> str:
            # The demo's agent joins the instance's agents; the SQL scheduler picks who gets the task
            # (another agent with free capacity may) and the demo then plays that agent.
            nonlocal agent
            sq.execute("INSERT INTO core.agents (id, capacity) VALUES (%s, 2)", (agent_id,))
            row = sq.execute("INSERT INTO core.tasks (id, kind, payload, priority) VALUES (ops.ulid(), 'refactor', %s, "
                             "1000) RETURNING id", (Jsonb({"file": "lib/greeter.py"}),)).fetchone()
            task["id"] = row["id"]
            n = sq.execute("SELECT core.assign_pending_tasks() AS n").fetchone()["n"]
            got = sq.execute("SELECT status, assigned_agent FROM core.tasks WHERE id = %s", (task["id"],)).fetchone()
            if got["assigned_agent"] is None:
                raise DemoError(f"task {task['id']} is still {got['status']}: no active agent has free capacity")
            task["agent"] = got["assigned_agent"]
            agent = AgentClient(task["agent"], instance=instance, s=s)
            return f"agent {task['agent']} got task {task['id']} ({n} assigned this run)"

        def ask_llm() -> str:
            r = agent.ask_llm([{"role": "user", "content": "How should greet() format its string?"}],
                              task_type="chat", timeout=timeout)
            if r.get("error"):
                raise DemoError(r["error"])
            return f"{r.get('model')}: {str(r.get('result'))[:60]!r}"

        def run_code() -> str:
            r = agent.run_job(CODE, "python", timeout=timeout)
            if r.get("exit_code") != 0:
                raise DemoError(f"exit {r.get('exit_code')}: {r.get('error') or r.get('output')}")
            return f"exit 0, output {str(r.get('output')).strip()!r}"

        def approval() -> str:
            rid = agent.send("approval", {"file_path": "lib/greeter.py", "diff": DIFF, "reason": "use an f-string"})
            if interactive:
                out.write(f"\n    waiting for a person: approve it at {web}/approvals\n")
            else:
                hitl.approve(rid, timeout)
            r = agent.result(rid, timeout=3600 if interactive else timeout)
            return f"approved={r.get('approved')} by {r.get('decided_by')}"

        def question() -> str:
            rid = agent.send("question", {"question": "Ship the refactor today?", "options": ["yes", "no"]})
            if interactive:
                out.write(f"\n    waiting for a person: answer it at {web}/questions\n")
            else:
                hitl.answer(rid, "yes", timeout)
            r = agent.result(rid, timeout=3600 if interactive else timeout)
            return f"{r.get('response')!r} from {r.get('answered_by')}"

        def record() -> str:
            for body in PATTERNS:
                sq.execute("INSERT INTO core.analysis_results (agent_id, result, confidence) VALUES (%s, %s, 0.9)",
                           (task["agent"], Jsonb(body)))
            sq.execute("SELECT core.finish_task(%s, %s)", (task["id"], Jsonb({"ok": True})))
            return f"{len(PATTERNS)} analysis results, task {task['id']} completed"

        def job(name: str) -> str:
            r = sq.execute("SELECT core.run_job(%s) AS r", (name,)).fetchone()["r"] or ""
            if r.startswith("failed"):
                raise DemoError(f"{name} {r}")
            return _short(r)

        def learn() -> str:
            return f"learn_patterns {job('learn_patterns')}; sync_learning {job('sync_learning')}"

        def drain() -> str:
            return f"drain_outbox {job('drain_outbox')}"

        def aggregate() -> str:
            a = run_job(s, "aggregate")
            b = run_job(s, "pattern-sync")
            return f"aggregate {_short(a)}; pattern-sync {_short(b)}"

        def fold_in() -> str:
            r = job("consume_inbox")
            n = sq.execute("SELECT count(*) AS n FROM core.global_knowledge WHERE key = 'python.fstring'").fetchone()["n"]
            if not n:
                raise DemoError("the aggregated pattern python.fstring did not reach the instance's knowledge")
            return f"consume_inbox {r}; python.fstring is in global_knowledge"

        def summary() -> str:
            return f"{len(p.rows)} steps, {sum(r[1] for r in p.rows) / 1000:.1f} s in all"

        steps = [("SQL scheduler assigns a task", assign), ("agent asks the LLM (Nexus)", ask_llm),
                 ("agent runs code (Genesis sandbox)", run_code), ("approval via the HITL page", approval),
                 ("question via the HITL page", question), ("analysis results recorded", record),
                 ("instance learns and queues patterns", learn), ("outbox drained to shared_queue", drain),
                 ("CentralCloud aggregates, sends knowledge back", aggregate),
                 ("instance folds the knowledge in", fold_in), ("done", summary)]
        try:
            if not interactive:
                hitl = HitlClient(s, web)
            for title, fn in steps:
                p.step(title, fn)
        finally:
            if hitl:
                hitl.close()
            if agent:
                agent.close()
    return p.rows


def _short(v: object) -> str:
    text = v if isinstance(v, str) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _page_is_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def web_url() -> str:
    """Where the daemon's page is (NEXUS_WEB_HOST, NEXUS_WEB_PORT)."""
    from orchestrator.nexus.settings import NexusSettings

    return NexusSettings.from_env().web_url
