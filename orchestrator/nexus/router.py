"""The router: admit (plan + atomic budget reservation in SQL) -> call with retries -> fall back -> settle.

Every decision that is data lives in SQL (nexus.admit / nexus.settle); this module only does the
HTTP calls and the waiting between them. `route()` always returns a result message: an agent
never waits forever.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable

import httpx
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from orchestrator.nexus.providers import CALL, ProviderError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0


def fast_commit(conninfo: str) -> str:
    """The router's nexus connections commit without waiting for the WAL flush (synchronous_commit=off).

    Admission stays atomic; a crash of the database server itself may lose the last few hundred ms
    of call-log rows and budget changes. That halves the router's own time per call.
    """
    from psycopg.conninfo import make_conninfo

    return make_conninfo(conninfo, options="-c synchronous_commit=off")


def prompt_chars(messages: list) -> int:
    return sum(len(m.get("content", "")) if isinstance(m.get("content"), str) else len(json.dumps(m))
               for m in messages if isinstance(m, dict))


# The largest max_tokens a request may ask for (nexus.admit takes an int; no model answers more).
MAX_TOKENS = 1_000_000


class Router:
    def __init__(self, pool: ConnectionPool, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.pool = pool
        self.client = client or httpx.Client(limits=httpx.Limits(max_keepalive_connections=20))
        self.sleep = sleep

    def close(self) -> None:
        self.client.close()

    def route(self, req: dict, on_attempt: Callable[[dict], None] | None = None, *, sender: str | None = None,
              sha256: str | None = None, msg_id: int | None = None) -> dict:
        """Answer one llm_requests message: {request_id, result, model, usage} or {request_id, error}.

        SENDER and SHA256 are the bus's record of who sent it and what it asks (Message.sender,
        Message.content_sha256): an id reused while its request is in flight is refused in SQL, and the
        answer carries request_sha256 so the agent can check it answers the request it stored."""
        out = self._route(req, on_attempt, sender, sha256)
        if sha256:
            out["request_sha256"] = sha256
        if msg_id is not None:  # a client that sent no id matches its result by pgmq's msg_id
            out["request_msg_id"] = msg_id
        if req.get("agent_id"):
            out["agent_id"] = req["agent_id"]
        return out

    def _route(self, req: dict, on_attempt, sender: str | None, sha256: str | None) -> dict:
        rid = req.get("id") or "?"
        agent, task = req.get("agent_id"), req.get("task_type")
        # messages are {role, content} objects; a bare string is taken as a user message
        messages = [m if isinstance(m, dict) else {"role": "user", "content": m if isinstance(m, str) else str(m)}
                    for m in (req.get("messages") or [])]
        mt = req.get("max_tokens")
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or not 1 <= mt <= MAX_TOKENS):
            return {"request_id": rid, "result": None, "model": None, "usage": None,
                    "error": f"max_tokens must be an integer from 1 to {MAX_TOKENS} (got {str(mt)[:40]}); "
                             "send the request again with a smaller max_tokens, or leave it out for the model's own"}
        with self.pool.connection() as c:
            adm = c.execute("SELECT nexus.admit(%s, %s, %s, %s, %s, %s, %s, %s) AS a",
                            (rid, agent, task, req.get("model"), prompt_chars(messages),
                             req.get("max_tokens"), sender, sha256)).fetchone()["a"]
        if not adm["admitted"]:
            return {"request_id": rid, "result": None, "model": None, "usage": None, "error": adm["reason"]}
        calls: list[dict] = []
        reply, chosen = None, None
        for cand in adm["candidates"]:
            fn = CALL[cand["kind"]]
            max_tokens = req.get("max_tokens") or cand["max_tokens"]
            for attempt in range(1, cand["max_retries"] + 2):
                if on_attempt:
                    on_attempt(cand)
                t0 = time.perf_counter()
                try:
                    reply = fn(self.client, cand, messages, max_tokens)
                except ProviderError as e:
                    calls.append({"attempt": attempt, "provider": cand["provider"], "model": cand["model"],
                                  "latency_ms": (time.perf_counter() - t0) * 1000, "status": "error", "error": str(e)})
                    log.info("request %s: %s attempt %d failed: %s", rid, cand["model"], attempt, e)
                    if not e.retryable or attempt > cand["max_retries"]:
                        break
                    backoff = cand["backoff_ms"] / 1000 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                    self.sleep(min(MAX_BACKOFF_S, max(backoff, e.retry_after or 0)))
                    continue
                calls.append({"attempt": attempt, "provider": cand["provider"], "model": cand["model"],
                              "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out,
                              "latency_ms": (time.perf_counter() - t0) * 1000, "status": "ok"})
                chosen = cand
                break
            if chosen:
                break
        with self.pool.connection() as c:
            totals = c.execute("SELECT nexus.settle(%s, %s, %s, %s) AS t",
                               (rid, agent, task, Jsonb(calls))).fetchone()["t"]
        if chosen is None:
            why = "; ".join(f"{c['model']} attempt {c['attempt']}: {c['error']}" for c in calls)
            return {"request_id": rid, "result": None, "model": None, "usage": None,
                    "error": f"every model failed for task_type {task}: {why}"}
        return {"request_id": rid, "result": reply.text, "model": chosen["model"],
                "usage": {"prompt_tokens": reply.tokens_in, "completion_tokens": reply.tokens_out,
                          "total_tokens": reply.tokens_in + reply.tokens_out, "cost": float(totals["cost"]),
                          "provider": chosen["provider"], "attempts": len(calls)}}
