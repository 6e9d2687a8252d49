"""The `nexus` worker: routes every llm_requests message and answers on its reply_to (or llm_results)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from orchestrator.core import metrics
from orchestrator.core.bus import Bus, Message, Reject, SelfSettlingBus
from orchestrator.core.heartbeat import Heartbeats
from orchestrator.core.messages import ValidationError
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings
from orchestrator.infra.db import make_pool, role_conninfo
from orchestrator.nexus.router import Router, fast_commit
from orchestrator.nexus.settings import NexusSettings

log = logging.getLogger(__name__)


def make_handler(bus: Bus, router: Router, margin_s: float = 15.0):
    """MARGIN_S: how long the lease must outlive a provider attempt's timeout (settling, publishing)."""

    def handle(m: Message) -> None:
        t0 = time.monotonic()
        held = {"until": m.vt}

        def lease(cand: dict) -> None:
            """Before each attempt: make sure the lease outlives the provider's timeout (extend only if not)."""
            if cand["kind"] == "offline":
                return
            need = float(cand["timeout_s"]) + margin_s
            if held["until"] < datetime.now(UTC) + timedelta(seconds=need):
                if bus.extend(m, need) == "ok":
                    held["until"] = datetime.now(UTC) + timedelta(seconds=need)

        result = router.route(m.body, on_attempt=lease, sender=m.sender, sha256=m.content_sha256, msg_id=m.msg_id)
        queue = m.body.get("reply_to") or "llm_results"
        try:
            bus.reply_and_ack(m, queue, result)
        except ValidationError as e:
            raise Reject(f"cannot answer on {queue}: {e}") from e
        log_answer(m, result, metrics.since(t0))

    return handle


def log_answer(m: Message, result: dict, seconds: float) -> None:
    """One INFO line (and the metrics) per answered request."""
    usage = result.get("usage") or {}
    model, status = result.get("model") or "-", "error" if result.get("error") else "ok"
    t_in, t_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    metrics.LLM_REQUESTS.labels(model=model, status=status).inc()
    metrics.LLM_LATENCY.labels(model=model, status=status).observe(seconds)
    metrics.LLM_TOKENS.labels(model=model, direction="in").inc(t_in)
    metrics.LLM_TOKENS.labels(model=model, direction="out").inc(t_out)
    fields = {"event": "llm_request", "request_id": result.get("request_id"), "agent_id": m.body.get("agent_id"),
              "task_type": m.body.get("task_type"), "model": model, "status": status, "tokens_in": t_in,
              "tokens_out": t_out, "cost": usage.get("cost"), "ms": round(seconds * 1000, 1)}
    if status == "ok":
        log.info("llm request %s from %s (%s): answered by %s, %d+%d tokens, cost %s, %.0f ms", fields["request_id"],
                 fields["agent_id"] or m.sender, fields["task_type"], model, t_in, t_out, usage.get("cost", 0),
                 seconds * 1000, extra={"fields": fields})
    else:
        log.info("llm request %s from %s (%s): answered with an error in %.0f ms: %s", fields["request_id"],
                 fields["agent_id"] or m.sender, fields["task_type"], seconds * 1000, str(result["error"])[:200],
                 extra={"fields": {**fields, "error": str(result["error"])[:500]}})


def make(s: Settings) -> Worker:
    ns = NexusSettings.from_env()  # a bad value fails before anything connects
    bus = SelfSettlingBus.for_role(s, "svc_nexus", source="nexus", pool_size=4)
    pool = make_pool(fast_commit(role_conninfo(s, "nexus", "svc_nexus")), max_size=4, name="nexus:router")
    router = Router(pool)
    handled = {"n": 0}
    beats = Heartbeats(bus, s, "nexus", lambda: {"llm_requests_handled": handled["n"], "slots": ns.concurrency,
                                                 "batch": s.batch_size}).start()

    def stop() -> None:
        beats.stop()
        router.close()
        pool.close()
        bus.close()

    # each slot reads SHARED_QUEUE_BATCH_SIZE requests at once; a request whose lease would end before its
    # provider call does is extended first (make_handler), and acks are fenced, so a long batch is safe
    return Worker(name="nexus", bus=bus, queue="llm_requests", concurrency=ns.concurrency, batch=s.batch_size,
                  handle=_counting(make_handler(bus, router, ns.lease_margin_s), handled), on_stop=stop)


def _counting(handle, counter: dict):
    """HANDLE, counting the requests it answered (the heartbeat reports them)."""
    def counted(m: Message) -> None:
        handle(m)
        counter["n"] += 1

    return counted
