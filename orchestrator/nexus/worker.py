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
from orchestrator.nexus.router import Call, Router, fast_commit
from orchestrator.nexus.settings import NexusSettings

log = logging.getLogger(__name__)


def leaser(bus: Bus, m: Message, margin_s: float):
    """Before each attempt on M: make sure its lease outlives the provider's timeout plus MARGIN_S (settling,
    publishing), extending it only if not."""
    held = {"until": m.vt}

    def lease(cand: dict) -> None:
        if cand["kind"] == "offline":
            return
        need = float(cand["timeout_s"]) + margin_s
        if held["until"] < datetime.now(UTC) + timedelta(seconds=need):
            if bus.extend(m, need) == "ok":
                held["until"] = datetime.now(UTC) + timedelta(seconds=need)

    return lease


def make_handler(bus: Bus, router: Router, margin_s: float = 15.0):
    """One delivery: routed, then answered and acked in one transaction."""

    def handle(m: Message) -> None:
        t0 = time.monotonic()
        result = router.route(m.body, on_attempt=leaser(bus, m, margin_s), sender=m.sender, sha256=m.content_sha256,
                              msg_id=m.msg_id)
        queue = m.body.get("reply_to") or "llm_results"
        try:
            bus.reply_and_ack(m, queue, result)
        except ValidationError as e:
            raise Reject(f"cannot answer on {queue}: {e}") from e
        log_answer(m, result, metrics.since(t0))

    return handle


class BatchAnswerer:
    """A whole read of llm_requests at once: admitted in one SQL call, then each one's provider attempts, then
    settled (nexus.settle_many) and answered (bus.reply: results sent, requests acked) in one call each. The
    answers ready so far go out before any request whose first attempt may wait on the network, so a slow
    call never holds finished answers back. A failure falls back to settling each message on its own."""

    def __init__(self, bus: Bus, router: Router, margin_s: float, single, counter: dict):
        self.bus, self.router, self.margin_s, self.single, self.counter = bus, router, margin_s, single, counter

    def __call__(self, msgs: list[Message], stop) -> list[Message]:
        t0 = time.monotonic()
        calls = [Call(m.body, m.sender, m.content_sha256, m.msg_id) for m in msgs]
        try:
            self.router.admit(calls)
        except Exception:  # noqa: BLE001 - nothing done yet: each message takes the one-at-a-time path
            log.warning("admitting a batch of %d failed; handling each on its own", len(msgs), exc_info=True)
            for m in msgs:
                self.bus.handle(m, self.single)
            return msgs
        done, pending = [], []
        for m, call in zip(msgs, calls, strict=True):
            if stop.is_set():  # shutdown: what has not started goes back at once
                self.bus.safely(self.bus.release, m)
                continue
            if pending and call.may_block:
                self.answer(pending, t0)
                pending = []
            try:
                self.router.attempt(call, leaser(self.bus, m, self.margin_s))
            except Exception as e:  # noqa: BLE001 - this message only
                self.bus.settle_failure(m, e)
                done.append(m)
                continue
            pending.append((m, call))
            done.append(m)
        self.answer(pending, t0)
        return done

    def answer(self, pending: list[tuple[Message, Call]], t0: float) -> None:
        """Settle PENDING in nexus and answer them on the bus, one call each."""
        if not pending:
            return
        try:
            self.router.settle([c for _m, c in pending])
            results = [self.router.result(c) for _m, c in pending]
            status = self.bus.reply_many([(m, m.body.get("reply_to") or "llm_results", r)
                                          for (m, _c), r in zip(pending, results, strict=True)])
        except Exception as e:  # noqa: BLE001 - each one settled as the one-at-a-time path would
            for m, _c in pending:
                self.bus.settle_failure(m, e)
            return
        for (m, _c), r, st in zip(pending, results, status, strict=True):
            if st.startswith("invalid: "):
                queue = m.body.get("reply_to") or "llm_results"
                self.bus.settle_failure(m, Reject(f"cannot answer on {queue}: {st.removeprefix('invalid: ')}"))
            elif st == "acked":
                self.counter["n"] += 1
                log_answer(m, r, metrics.since(t0))


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
    single = _counting(make_handler(bus, router, ns.lease_margin_s), handled)
    return Worker(name="nexus", bus=bus, queue="llm_requests", concurrency=ns.concurrency, batch=s.batch_size,
                  handle=single, handle_batch=BatchAnswerer(bus, router, ns.lease_margin_s, single, handled),
                  on_stop=stop)


def _counting(handle, counter: dict):
    """HANDLE, counting the requests it answered (the heartbeat reports them)."""
    def counted(m: Message) -> None:
        handle(m)
        counter["n"] += 1

    return counted
