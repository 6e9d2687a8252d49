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
from dataclasses import dataclass, field

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


@dataclass
class Call:
    """One request on its way through the router: what admission, the attempts and settling need and found.

    SENDER and SHA256 are the bus's record of who sent it and what it asks (Message.sender,
    Message.content_sha256): an id reused while its request is in flight is refused in SQL, and the
    answer carries request_sha256 so the agent can check it answers the request it stored."""

    req: dict
    sender: str | None = None
    sha256: str | None = None
    msg_id: int | None = None
    adm: dict | None = None
    calls: list[dict] = field(default_factory=list)
    reply: object = None
    chosen: dict | None = None
    totals: dict | None = None

    @property
    def rid(self) -> str:
        return self.req.get("id") or "?"

    @property
    def messages(self) -> list[dict]:
        """{role, content} objects; a bare string is taken as a user message."""
        return [m if isinstance(m, dict) else {"role": "user", "content": m if isinstance(m, str) else str(m)}
                for m in (self.req.get("messages") or [])]

    @property
    def refused(self) -> str | None:
        """Why the request is refused before admission (a max_tokens no model can take), or None."""
        mt = self.req.get("max_tokens")
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or not 1 <= mt <= MAX_TOKENS):
            return (f"max_tokens must be an integer from 1 to {MAX_TOKENS} (got {str(mt)[:40]}); send the request "
                    "again with a smaller max_tokens, or leave it out for the model's own")
        return None

    @property
    def admitted(self) -> bool:
        return bool(self.adm and self.adm["admitted"])

    @property
    def may_block(self) -> bool:
        """Its first attempt may wait on the network (any provider but the offline one)."""
        return self.admitted and bool(self.adm["candidates"]) and self.adm["candidates"][0]["kind"] != "offline"

    def admission(self) -> dict:
        return {"request_id": self.rid, "agent_id": self.req.get("agent_id"), "task_type": self.req.get("task_type"),
                "model": self.req.get("model"), "prompt_chars": prompt_chars(self.messages),
                "max_tokens": self.req.get("max_tokens"), "sender": self.sender, "sha256": self.sha256}

    def settlement(self) -> dict:
        return {"request_id": self.rid, "agent_id": self.req.get("agent_id"), "task_type": self.req.get("task_type"),
                "calls": self.calls}


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
        """Answer one llm_requests message: {request_id, result, model, usage} or {request_id, error}."""
        call = Call(req, sender, sha256, msg_id)
        self.admit([call])
        self.attempt(call, on_attempt)
        self.settle([call])
        return self.result(call)

    def admit(self, calls: list[Call]) -> None:
        """Plan and reserve the budget of every call not refused already, in one SQL call (nexus.admit_many)."""
        todo = [c for c in calls if c.refused is None]
        if not todo:
            return
        with self.pool.connection() as c:
            got = c.execute("SELECT nexus.admit_many(%s) AS a", (Jsonb([t.admission() for t in todo]),)).fetchone()["a"]
        for t, adm in zip(todo, got, strict=True):
            t.adm = adm

    def settle(self, calls: list[Call]) -> None:
        """Log the attempts of every admitted call and replace its reservation by the real use, in one SQL call."""
        todo = [c for c in calls if c.admitted]
        if not todo:
            return
        with self.pool.connection() as c:
            got = c.execute("SELECT nexus.settle_many(%s) AS t", (Jsonb([t.settlement() for t in todo]),)).fetchone()["t"]
        for t, totals in zip(todo, got, strict=True):
            t.totals = totals

    def attempt(self, call: Call, on_attempt: Callable[[dict], None] | None = None) -> None:
        """Try the admitted call's candidates in order, each with its retries and backoff, until one answers."""
        if not call.admitted:
            return
        messages = call.messages
        for cand in call.adm["candidates"]:
            fn = CALL[cand["kind"]]
            max_tokens = call.req.get("max_tokens") or cand["max_tokens"]
            for attempt in range(1, cand["max_retries"] + 2):
                if on_attempt:
                    on_attempt(cand)
                t0 = time.perf_counter()
                try:
                    call.reply = fn(self.client, cand, messages, max_tokens)
                except ProviderError as e:
                    call.calls.append({"attempt": attempt, "provider": cand["provider"], "model": cand["model"],
                                       "latency_ms": (time.perf_counter() - t0) * 1000, "status": "error",
                                       "error": str(e)})
                    log.info("request %s: %s attempt %d failed: %s", call.rid, cand["model"], attempt, e)
                    if not e.retryable or attempt > cand["max_retries"]:
                        break
                    backoff = cand["backoff_ms"] / 1000 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                    self.sleep(min(MAX_BACKOFF_S, max(backoff, e.retry_after or 0)))
                    continue
                call.calls.append({"attempt": attempt, "provider": cand["provider"], "model": cand["model"],
                                   "tokens_in": call.reply.tokens_in, "tokens_out": call.reply.tokens_out,
                                   "latency_ms": (time.perf_counter() - t0) * 1000, "status": "ok"})
                call.chosen = cand
                return

    def result(self, call: Call) -> dict:
        """The result message for a settled (or refused) call."""
        out = self._outcome(call)
        if call.sha256:
            out["request_sha256"] = call.sha256
        if call.msg_id is not None:  # a client that sent no id matches its result by pgmq's msg_id
            out["request_msg_id"] = call.msg_id
        if call.req.get("agent_id"):
            out["agent_id"] = call.req["agent_id"]
        return out

    @staticmethod
    def _outcome(call: Call) -> dict:
        rid = call.rid
        why = call.refused or (None if call.admitted else call.adm["reason"])
        if why:
            return {"request_id": rid, "result": None, "model": None, "usage": None, "error": why}
        if call.chosen is None:
            why = "; ".join(f"{c['model']} attempt {c['attempt']}: {c['error']}" for c in call.calls)
            return {"request_id": rid, "result": None, "model": None, "usage": None,
                    "error": f"every model failed for task_type {call.req.get('task_type')}: {why}"}
        r, chosen = call.reply, call.chosen
        return {"request_id": rid, "result": r.text, "model": chosen["model"],
                "usage": {"prompt_tokens": r.tokens_in, "completion_tokens": r.tokens_out,
                          "total_tokens": r.tokens_in + r.tokens_out, "cost": float(call.totals["cost"]),
                          "provider": chosen["provider"], "attempts": len(call.calls)}}
