"""Chaos for the bus: PostgreSQL crashes under load, connections cut longer than the visibility
timeout, hostile input. Zero lost requests, zero duplicate results."""

from __future__ import annotations

import json
import statistics
import subprocess
import time

import pytest
from chaos_tools import CuttableProxy, EchoResponder, collect_results
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.core.bus import Bus
from orchestrator.core.messages import ValidationError
from orchestrator.infra.cluster import Cluster, _as_user, _os_user, bindir
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo

pytestmark = pytest.mark.chaos

LLM = {"task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}


def _pg_ctl(c: Cluster, *args: str) -> None:
    subprocess.run(_as_user(_os_user(), [str(bindir() / "pg_ctl"), *args, "-D", str(c.data_dir)]),
                   check=True, capture_output=True, timeout=60)


def test_postgres_immediate_stop_under_load(s, clean_queues):
    """1,000 requests, PostgreSQL killed (-m immediate) mid-way and restarted: all answered exactly once."""
    c = Cluster(s)
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=2)
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"), poll_ms=200, vt_s=5, pool_size=4)
    ids = [m["id"] for m in (sender.stamp("llm_requests", {**LLM, "agent_id": f"a{i}"}) for i in range(1000))]
    with EchoResponder(nexus, concurrency=3) as echo:
        for chunk in range(0, 1000, 100):
            sender.publish_batch("llm_requests", [{**LLM, "agent_id": "x", "id": i} for i in ids[chunk:chunk + 100]])
        while echo.count < 200:
            time.sleep(0.05)
        _pg_ctl(c, "stop", "-m", "immediate")
        time.sleep(2)
        _pg_ctl(c, "start", "-w", "-l", str(c.log_file))
        c.wait_ready()
        down_at = time.monotonic()  # the workers' reconnect time counts from when the server is back
        answered_before = echo.count
        # workers reconnect on their own, within 10 s
        while echo.count == answered_before and time.monotonic() - down_at < 30:
            time.sleep(0.1)
        assert echo.count > answered_before, "workers did not resume after the restart"
        assert time.monotonic() - down_at < 10, f"resumed only after {time.monotonic() - down_at:.1f}s"
        with connect(owner_conninfo(s, "shared_queue")) as owner:
            counts = collect_results(owner, "llm_results", set(ids), timeout=90)
        assert echo.alive(), "a worker thread died"
    sender.close()
    nexus.close()
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} requests never answered"
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not dups, f"duplicate results: {list(dups.items())[:5]}"


def test_connection_cut_longer_than_visibility_timeout(s, clean_queues):
    """Workers behind a proxy lose PostgreSQL for longer than the vt; after it heals nothing is lost."""
    c = Cluster(s)
    proxy = CuttableProxy(c.port)
    d = conninfo_to_dict(role_conninfo(s, "shared_queue", "svc_nexus"))
    d["port"] = proxy.port
    nexus = Bus(make_conninfo(**d), poll_ms=200, vt_s=2, pool_size=3)
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"))
    ids = []
    try:
        with EchoResponder(nexus, concurrency=2) as echo:
            for i in range(100):
                ids.append(sender.publish("llm_requests", {**LLM, "agent_id": f"a{i}"}))
            while echo.count < 20:
                time.sleep(0.05)
            proxy.cut()
            for i in range(100, 200):  # producers keep going while consumers are cut off
                ids.append(sender.publish("llm_requests", {**LLM, "agent_id": f"a{i}"}))
            time.sleep(4)  # longer than the visibility timeout
            proxy.heal()
            with connect(owner_conninfo(s, "shared_queue")) as owner:
                rids = {r["message"]["id"] for r in owner.execute(
                    "SELECT message FROM pgmq.q_llm_requests UNION ALL "
                    "SELECT message FROM pgmq.a_llm_requests WHERE msg_id = ANY(%s)", (ids,))}
                counts = collect_results(owner, "llm_results", rids, timeout=60)
            assert echo.alive()
    finally:
        proxy.close()
        sender.close()
        nexus.close()
    assert set(counts) >= rids and len(rids) == 200
    assert all(v == 1 for v in counts.values()), "duplicate results after the cut"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch, max_size=4),
                     max_leaves=20)


# Every queue the bus validates, and every field name any of them knows (plus junk).
FUZZ_QUEUES = ["llm_requests", "llm_results", "approval_requests", "approval_responses", "question_requests",
               "question_responses", "job_requests", "job_results", "pattern_messages", "learned_patterns",
               "knowledge_updates", "template_updates", "instance_heartbeat", "dead_letters"]
FUZZ_KEYS = ["agent_id", "task_type", "messages", "reply_to", "id", "type", "created_at", "model", "max_tokens",
             "request_id", "result", "error", "usage", "file_path", "diff", "approved", "decided_by", "question",
             "options", "response", "code", "language", "mode", "timeout_s", "output", "exit_code", "instance_id",
             "patterns", "artifacts", "branch", "artifacts_count", "git_url", "updated_files", "service", "at",
             "stats", "queue", "message", "attempts", "junk"]


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(queue=st.sampled_from(FUZZ_QUEUES), body=st.dictionaries(st.sampled_from(FUZZ_KEYS), _json, max_size=7))
def test_fuzzed_messages_are_refused_or_valid(s, queue, body):
    """Whatever arrives on whichever queue, the client and SQL agree: refused with a clear error, or valid."""
    with Bus(owner_conninfo(s, "shared_queue"), pool_size=1) as bus:
        try:
            py = bus.rules.validate(queue, body)
        except ValidationError as e:
            assert f"{queue}:" in str(e)
            py = None
        with connect(owner_conninfo(s, "shared_queue"), autocommit=False) as c:
            try:
                c.execute("SELECT bus.validate_message(%s, %s::jsonb)", (queue, json.dumps(body)))
                sql_ok = True
            except Exception as e:  # noqa: BLE001
                # 22P02: json.dumps writes Infinity, which PostgreSQL refuses as JSON text
                assert getattr(e, "sqlstate", None) in ("22023", "54000", "22P05", "22P02"), e
                sql_ok = False
            c.rollback()
        assert (py is not None) == sql_ok, (queue, body, py)


def test_hostile_bodies_refused_at_send(s, clean_queues, sq_owner):
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    with Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=1) as bus:
        for body in ({**LLM, "agent_id": "a", "blob": "x" * 10_000_000}, {**LLM, "agent_id": "a", "deep": deep},
                     {**LLM, "agent_id": "a" * 2_000_000}):
            with pytest.raises((ValidationError, RecursionError, ValueError)):
                bus.publish("llm_requests", body)
        # and straight to SQL, bypassing the client: PostgreSQL refuses too
        with pytest.raises(Exception, match="over the limit|stack depth|nested"):
            sq_owner.execute("SELECT pgmq.send('llm_requests', jsonb_build_object('agent_id','a','task_type','t',"
                             "'messages', jsonb_build_array(1), 'blob', repeat('x', 10000000)))")
    assert sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests").fetchone()["n"] == 0


def test_100k_read_archive_cycles_keep_dead_tuples_bounded(s, clean_queues, sq_owner):
    """Queue tables churn; autovacuum (tuned per queue) keeps dead tuples bounded and reads fast.

    Bounded means three things, none of them a single sample against a single bound (autovacuum is a
    sawtooth whose teeth a loaded machine stretches now and then): the peaks do not grow (the median
    peak of the later windows against the earlier ones, each window several naptimes long, sampled
    every 0.25 s); the troughs do not grow (what a vacuum cannot remove, e.g. behind a transaction the
    bus left open, raises every trough); and once the churn stops, autovacuum brings the table down
    to its own trigger level (waited for, not slept for).
    """
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=1)
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"), pool_size=1)
    body = {**LLM, "agent_id": "churn"}
    total, batch = 100_000, 10
    lat: list[float] = []
    at: list[float] = []  # wall-clock time of each read
    dead: list[tuple[float, int]] = []  # (monotonic time, n_dead_tup), every 0.25 s
    done = 0

    def dead_now() -> int:
        return sq_owner.execute("SELECT n_dead_tup FROM pg_stat_user_tables "
                                "WHERE relid = 'pgmq.q_llm_requests'::regclass").fetchone()["n_dead_tup"]

    def vacuums() -> int:
        return sq_owner.execute("SELECT autovacuum_count FROM pg_stat_user_tables "
                                "WHERE relid = 'pgmq.q_llm_requests'::regclass").fetchone()["autovacuum_count"]

    vac0 = vacuums()
    try:
        sender.publish_batch("llm_requests", [body] * 500)  # a standing backlog, as in production
        while done < total:
            sender.publish_batch("llm_requests", [body] * batch)
            t0 = time.perf_counter()
            msgs = nexus.read("llm_requests", batch)
            lat.append(time.perf_counter() - t0)
            at.append(time.time())
            nexus.ack_many(msgs)
            done += len(msgs)
            if not dead or time.monotonic() - dead[-1][0] >= 0.25:
                dead.append((time.monotonic(), dead_now()))
    finally:
        sender.close()
        nexus.close()
    n = len(lat)
    # pg_cron starts every database's per-minute jobs (outbox drains, inbox, heartbeats) at second 0: reads
    # in the first 3 s of a minute measure that machine-wide burst, not the queue table, so they are left
    # out of both windows (the same filter for the start and the end)
    def window(idx: range) -> list[float]:
        return sorted(lat[i] for i in idx if time.gmtime(at[i]).tm_sec >= 3)

    # the first and the last quarter (2,500 reads each): a p99 over fewer reads is a handful of outliers
    first = window(range(0, n // 4))
    last = window(range(n - n // 4, n))
    p99_first, p99_last = first[int(len(first) * 0.99)], last[int(len(last) * 0.99)]
    assert vacuums() - vac0 >= 2, "autovacuum never ran on the queue table"

    # six time windows of the run (each about 25 s, 2-3 autovacuum naptimes): their peaks and troughs
    t_start, t_end = dead[0][0], dead[-1][0]
    span = (t_end - t_start) / 6
    wins = [[d for t, d in dead if t_start + i * span <= t <= t_start + (i + 1) * span] for i in range(6)]
    peaks, troughs = [max(w) for w in wins if w], [min(w) for w in wins if w]
    shown = f"window peaks {peaks}, troughs {troughs}"
    # a sawtooth, not a ramp: the later windows' median peak no higher than the earlier ones' (one tall
    # tooth, a vacuum a busy machine started late, moves a maximum but not the median)
    assert statistics.median(peaks[3:]) <= 1.5 * statistics.median(peaks[:3]) + 5_000, f"dead tuples keep growing: {shown}"
    # what vacuum leaves behind does not pile up. A trough is the first 0.25 s sample after a vacuum:
    # since the bus's sends got faster (issue 15) one sample interval alone leaves up to ~4,000 dead
    # tuples (measured troughs [0, 2920, 20, 410, 4120, 3160]); a held-back horizon would add ~20,000
    # per window, so 5,000 of slack still catches it
    assert statistics.median(troughs[3:]) <= 1.5 * statistics.median(troughs[:3]) + 5_000, \
        f"dead tuples vacuum cannot remove pile up: {shown}"
    # churn over: autovacuum takes the table down to below its trigger (500 + 1 % of the rows), every
    # dead tuple removable; waited for on the table's own statistics
    settled, deadline, left = vacuums(), time.monotonic() + 120, dead_now()
    while left > 1_000 and time.monotonic() < deadline:
        time.sleep(0.5)
        left = dead_now()
    assert left <= 1_000, (f"{left} dead tuples still there 120 s after the churn stopped "
                           f"({vacuums() - settled} autovacuum runs since); {shown}")
    print(f"read p99 {p99_first * 1000:.2f} -> {p99_last * 1000:.2f} ms over {n} reads; {shown}")
    assert p99_last <= 2 * max(p99_first, 0.002), f"read p99 went from {p99_first * 1000:.2f} to {p99_last * 1000:.2f} ms"
