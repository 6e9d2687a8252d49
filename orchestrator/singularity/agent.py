"""AgentClient: an agent's requests over the bus (LLM, job, approval, question) and their results.

Every request is recorded in the instance database (core.agent_results) before it is published and
its reply is stored there before it is acked on the bus, so an agent that restarts finds its results:
`result(request_id)` answers from the database first, then from the reply queue.
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.core.bus import Bus
from orchestrator.infra.config import Settings, settings
from orchestrator.infra.db import connect_retry, role_conninfo, service_role
from orchestrator.infra.instances import check_id, database

# kind -> (request queue, reply queue kind)
KINDS = {"llm": ("llm_requests", "llm_results"), "job": ("job_requests", "job_results"),
         "approval": ("approval_requests", "approval_responses"),
         "question": ("question_requests", "question_responses")}


class AgentClient:
    """Requests for agent AGENT_ID of Singularity INSTANCE; use as a context manager."""

    def __init__(self, agent_id: str, instance: str = "default", s: Settings | None = None, *, poll_ms: int = 500):
        self.agent_id = agent_id
        self.instance = check_id(instance)
        self.s = s or settings()
        role = service_role("singularity", instance)
        self.bus = Bus.for_role(self.s, role, source=f"singularity:{instance}:{agent_id}", poll_ms=poll_ms, pool_size=2)
        self._db_conninfo = role_conninfo(self.s, database(instance), role)
        self._db: psycopg.Connection | None = None
        self._reply_queues: dict[str, str] = {}

    # -- plumbing -------------------------------------------------------------------------
    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self.bus.close()

    def _sql(self, query: str, params: tuple = ()) -> list[dict]:
        """Run QUERY on the instance database, reconnecting once if the server restarted."""
        for attempt in (1, 2):
            if self._db is None or self._db.closed:
                self._db = connect_retry(self._db_conninfo)
            try:
                cur = self._db.execute(query, params)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                self._db = None
                if attempt == 2:
                    raise
        return []

    def reply_queue(self, kind: str) -> str:
        """This instance's reply queue for KIND (core.instance_queue: SQL holds the naming)."""
        if kind not in self._reply_queues:
            self._reply_queues[kind] = self._sql("SELECT core.instance_queue(%s) AS q", (KINDS[kind][1],))[0]["q"]
        return self._reply_queues[kind]

    # -- generic request / result -----------------------------------------------------------
    def send(self, kind: str, body: dict) -> str:
        """Publish a KIND request (llm, job, approval, question) for this agent; returns its request id."""
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}; use one of {', '.join(KINDS)}")
        queue, reply_to = KINDS[kind][0], self.reply_queue(kind)
        m = self.bus.stamp(queue, {**body, "agent_id": self.agent_id, "reply_to": reply_to})  # id stamped here
        self._sql("SELECT core.record_request(%s, %s, %s, %s, %s)", (m["id"], self.agent_id, kind, Jsonb(m), reply_to))
        self.bus.notifier.subscribe(reply_to)
        self.bus.publish(queue, m)
        return m["id"]

    def stored(self, request_id: str) -> dict | None:
        """The stored result of REQUEST_ID, or None while it has none."""
        rows = self._sql("SELECT result FROM core.agent_results WHERE request_id = %s", (request_id,))
        return rows[0]["result"] if rows else None

    def pending(self) -> list[str]:
        """Request ids of this agent still without a result (e.g. after a restart)."""
        return [r["request_id"] for r in self._sql(
            "SELECT request_id FROM core.agent_results WHERE agent_id = %s AND result IS NULL ORDER BY created_at",
            (self.agent_id,))]

    def result(self, request_id: str, timeout: float = 60.0) -> dict:
        """The reply to REQUEST_ID: from core.agent_results if already stored, else from its reply queue
        (stored first, then acked). TimeoutError after TIMEOUT seconds."""
        rows = self._sql("SELECT reply_to, result FROM core.agent_results WHERE request_id = %s", (request_id,))
        if not rows:
            raise KeyError(f"no request {request_id} in core.agent_results of instance {self.instance}; "
                           "was it sent by AgentClient.send for this instance?")
        if rows[0]["result"] is not None:
            return rows[0]["result"]
        reply_to = rows[0]["reply_to"]

        outcome: dict[str, str] = {}

        def store(m) -> str:  # stored here before the bus acks it: a restarted agent finds it
            outcome["status"] = self._sql("SELECT core.store_result(%s, %s) AS s",
                                          (request_id, Jsonb(m.body)))[0]["s"]
            return outcome["status"]

        got = self.bus.await_reply(reply_to, request_id, timeout=timeout, store=store)
        return self.stored(request_id) if outcome.get("status") == "already" else got  # the first result stands

    # -- the four kinds ---------------------------------------------------------------------
    def ask_llm(self, messages: list[dict], task_type: str = "chat", timeout: float = 60.0, **extra) -> dict:
        """Ask an LLM through Nexus; returns the llm_result ({result, model, usage, error})."""
        return self.result(self.send("llm", {"messages": messages, "task_type": task_type, **extra}), timeout)

    def run_job(self, code: str, language: str = "python", mode: str = "run", timeout: float = 60.0, **extra) -> dict:
        """Run code in Genesis' sandbox; returns the job_result ({output, error, exit_code, ...})."""
        return self.result(self.send("job", {"code": code, "language": language, "mode": mode, **extra}), timeout)

    def request_approval(self, file_path: str, diff: str, reason: str | None = None, timeout: float = 3600.0,
                         **extra) -> dict:
        """Ask a human to approve a change; returns the approval_response ({approved, decided_by, comment})."""
        body = {"file_path": file_path, "diff": diff, **extra}
        if reason is not None:
            body["reason"] = reason
        return self.result(self.send("approval", body), timeout)

    def ask_question(self, question: str, options: list[str] | None = None, timeout: float = 3600.0) -> dict:
        """Ask a human a question; returns the question_response ({response, answered_by})."""
        body: dict = {"question": question}
        if options is not None:
            body["options"] = options
        return self.result(self.send("question", body), timeout)
