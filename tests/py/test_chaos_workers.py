"""Chaos for the real daemon (`orchestrator daemon --only KIND` as a subprocess): kill -9 with work in
flight, SIGTERM with work in flight, PostgreSQL restarted under load. Every request gets exactly one
result (counted per request_id over the result queue and its archive): zero lost, zero duplicates.

Adding a worker kind is one entry in KINDS: a class that sends requests, names its result queues,
and (optionally) plays the people or services the kind waits for.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time

import pytest
from chaos_tools import (
    CuttableProxy,
    DaemonProc,
    assert_exactly_once,
    count_results,
    in_flight,
    result_bodies,
    wait_exactly_once,
)
from llm_servers import ProviderServer

from orchestrator.core.bus import Bus
from orchestrator.core.messages import ulid
from orchestrator.infra.cluster import Cluster, _as_user, _os_user, bindir
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo

pytestmark = pytest.mark.chaos

PROMPT = [{"role": "user", "content": "chaos"}]


def _wait(cond, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(autouse=True)
def leave_nothing_behind(s):
    """Later tests (alerts, CentralCloud statistics, pg_cron drains) must not see this file's leftovers:
    empty the live queues and forget the heartbeats the daemons here sent (they would read as late)."""
    with connect(owner_conninfo(s, "shared_queue")) as c:
        start = c.execute("SELECT now() AS t").fetchone()["t"]
    yield
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for r in c.execute("SELECT queue_name FROM bus.queues WHERE queue_name <> 'instance_heartbeat'").fetchall():
            c.execute("SELECT pgmq.purge_queue(%s)", (r["queue_name"],))
        for t in ("q", "a"):  # daemon heartbeats carry a pid; Singularity's pg_cron heartbeats do not
            c.execute(f"DELETE FROM pgmq.{t}_instance_heartbeat WHERE enqueued_at >= %s "
                      "AND message->'stats' ? 'pid'", (start,))


@pytest.fixture(scope="module")
def provider():
    """A real local OpenAI-style server whose model m_chaos answers after 1 s."""
    srv = ProviderServer(slow_s=1.0)
    srv.script["m_chaos"] = ["slow"]
    yield srv
    srv.close()


@pytest.fixture
def slow_route(s, provider):
    """task_type chaos-slow routes to m_chaos on the local slow server (timeout 2 s, no retries)."""
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("SELECT nexus.set_provider('chaos', 'openai', %s, 'CHAOS_KEY', 2, 0, 100)", (provider.url + "/v1",))
        c.execute("SELECT nexus.set_model('m_chaos', 'chaos', 'm_chaos')")
        c.execute("SELECT nexus.set_route('chaos-slow', ARRAY['m_chaos'])")
        provider.calls.clear()
        yield c
        c.execute("DELETE FROM nexus.providers WHERE name = 'chaos'")  # cascades to its model and routes


# -- the worker kinds -------------------------------------------------------------------------------
# Each kind: the daemon worker to run (only, env), its request and result queues, send(ctx, wave) for
# the two waves of requests, the in-flight counts expected after each wave (hold), the people or
# services it waits for (after_kill, after_restart), and what a right answer looks like (check).
def _send(s, queue: str, bodies: list[dict]) -> list[str]:
    ids = [ulid() for _ in bodies]
    with Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="chaos", pool_size=1) as b:
        b.publish_batch(queue, [{**body, "id": i, "agent_id": "chaos"} for body, i in zip(bodies, ids, strict=True)])
    return ids


class NexusKind:
    """nexus: llm_requests answered on llm_results; the slow provider (1 s calls) holds requests in flight,
    their lease extended to the provider's timeout + 15 s."""

    only = "nexus"
    queues = ("llm_requests",)
    results = ("llm_results",)
    hold = (2, 4)                # NEXUS_CONCURRENCY=2 per daemon: every slot busy
    env = {"NEXUS_CONCURRENCY": "2", "SHARED_QUEUE_VT_S": "2", "CHAOS_KEY": "k"}
    fixtures = ("slow_route",)
    fenced_log = "not sent: this delivery is"

    def send(self, ctx, wave: int) -> list[str]:
        return _send(ctx["s"], "llm_requests", [{"task_type": "chaos-slow", "messages": PROMPT,
                                                 "reply_to": "llm_results"}] * 8)

    def after_kill(self, ctx, ids) -> None:
        pass

    def after_restart(self, ctx, ids) -> None:
        pass

    def check(self, r: dict) -> bool:
        """A real answer from the slow model, not an error about a second admission."""
        return r.get("model") == "m_chaos" and not r.get("error") and r.get("result") == "openai:m_chaos says hi"


class HitlKind:
    """hitl: approvals and questions held for people (lease 3 s, renewed by any live hitl worker since the
    holds live in nexus). Per wave of 5 approvals + 5 questions: 2 decided and published while its daemon
    runs, 2 decided while no daemon can publish, 6 decided after the new daemon re-read the lapsed
    deliveries (read_ct 2) and re-attached them to the same items."""

    only = "hitl"
    queues = ("approval_requests", "question_requests")
    results = ("approval_responses", "question_responses")
    hold = (8, 16)
    env = {"NEXUS_HITL_LEASE_S": "3", "NEXUS_HITL_TICK_S": "0.2", "NEXUS_WEB_PORT": "0"}
    fixtures = ()
    fenced_log = None

    def send(self, ctx, wave: int) -> list[str]:
        if "nexus" not in ctx:
            ctx["nexus"] = connect(owner_conninfo(ctx["s"], "nexus"))
            ctx["sq"] = connect(owner_conninfo(ctx["s"], "shared_queue"))
        ids = _send(ctx["s"], "approval_requests", [{"file_path": f"f{k}.py", "diff": "+x", "reason": "chaos"}
                                                    for k in range(5)])
        ids += _send(ctx["s"], "question_requests", [{"question": "go on?", "options": ["yes", "no"]}] * 5)
        _wait(lambda: ctx["nexus"].execute("SELECT count(*) AS n FROM nexus.hitl_items WHERE request_id = ANY(%s)",
                                           (ids,)).fetchone()["n"] == 10, 20, "hitl to claim every request")
        self._decide(ctx, [ids[0], ids[5]])
        _wait(lambda: len(count_results(ctx["sq"], self.results, [ids[0], ids[5]])) == 2, 10,
              "the first decisions published")
        return ids

    def _decide(self, ctx, ids) -> None:
        for i in ids:
            kind = ctx["nexus"].execute("SELECT kind FROM nexus.hitl_items WHERE request_id = %s", (i,)).fetchone()
            if kind["kind"] == "approval":
                ctx["nexus"].execute("SELECT nexus.hitl_decide(%s, 'chaos-person', true, NULL, NULL)", (i,))
            else:
                ctx["nexus"].execute("SELECT nexus.hitl_decide(%s, 'chaos-person', NULL, 'yes', NULL)", (i,))

    def after_kill(self, ctx, ids) -> None:
        waves = (ids[:10], ids[10:])
        self._decide(ctx, [i for w in waves for i in (w[1], w[6])])  # decided while nobody can publish
        # no live daemon renews the leases now: they lapse and the requests become visible again
        unpublished = [i for w in waves for i in w[1:5] + w[6:]]
        _wait(lambda: sum(ctx["sq"].execute(f"SELECT count(*) AS n FROM pgmq.q_{q} WHERE vt <= now() "
                                            "AND message->>'id' = ANY(%s)", (unpublished,)).fetchone()["n"]
                          for q in self.queues) == len(unpublished), 10, "the dead daemons' leases to lapse")

    def after_restart(self, ctx, ids) -> None:
        rest = [i for w in (ids[:10], ids[10:]) for i in w[2:5] + w[7:]]
        _wait(lambda: ctx["nexus"].execute(
            "SELECT count(*) AS n FROM nexus.hitl_items WHERE request_id = ANY(%s) AND read_ct >= 2",
            (rest,)).fetchone()["n"] == len(rest), 30, "the new daemon to re-attach the redelivered requests")
        self._decide(ctx, rest)
        ctx["nexus"].close()
        ctx["sq"].close()

    def check(self, r: dict) -> bool:
        return r.get("approved") is True or r.get("response") == "yes"


class GenesisKind:
    """genesis: job_requests run in the sandbox (`time.sleep(3)`), answered on job_results; the lease is the
    job's timeout (5 s) + GENESIS_LEASE_MARGIN_S (1 s). A redelivered job whose claim is still held waits,
    then runs again; the first stored result wins, so the frozen worker's late result is fenced."""

    only = "genesis"
    queues = ("job_requests",)
    results = ("job_results",)
    hold = (2, 4)                # GENESIS_CONCURRENCY=2 per daemon
    env = {"GENESIS_CONCURRENCY": "2", "GENESIS_LEASE_MARGIN_S": "1", "SHARED_QUEUE_VT_S": "2"}
    fixtures = ()
    fenced_log = "not sent: this delivery is"

    def send(self, ctx, wave: int) -> list[str]:
        return _send(ctx["s"], "job_requests", [{"code": "import time; time.sleep(3); print(1)", "language": "python",
                                                 "mode": "run", "timeout_s": 5}] * 3)

    def after_kill(self, ctx, ids) -> None:
        pass

    def after_restart(self, ctx, ids) -> None:
        pass

    def check(self, r: dict) -> bool:
        return r.get("exit_code") == 0 and (r.get("stdout") or r.get("output") or "").strip() == "1"


KINDS = {"nexus": NexusKind, "hitl": HitlKind, "genesis": GenesisKind}


@pytest.mark.parametrize("kind", list(KINDS))
def test_worker_dies_with_work_in_flight(s, clean_queues, sq_owner, request, tmp_path, kind):
    """Daemon A holds work and is frozen (SIGSTOP: a zombie), daemon B holds work and is killed (kill -9);
    daemon C answers every request exactly once; A wakes up (SIGCONT) and its late results are fenced."""
    k = KINDS[kind]()
    for f in k.fixtures:
        request.getfixturevalue(f)
    ctx: dict = {"s": s}
    env = {**k.env, "SHARED_QUEUE_POLL_MS": "200"}

    def held(ids) -> int:
        return sum(in_flight(sq_owner, q, ids) for q in k.queues)

    with contextlib.ExitStack() as stack:
        a = stack.enter_context(DaemonProc(k.only, env, tmp_path / "a.log"))
        a.wait_started()
        ids = k.send(ctx, 0)
        _wait(lambda: held(ids) >= k.hold[0], 30, f"daemon A to hold {k.hold[0]} in flight")
        a.p.send_signal(signal.SIGSTOP)
        b = stack.enter_context(DaemonProc(k.only, env, tmp_path / "b.log"))
        b.wait_started()
        ids += k.send(ctx, 1)
        n_held = _wait(lambda: held(ids) >= k.hold[1] and held(ids), 30, f"A and B to hold {k.hold[1]} in flight")
        before = count_results(sq_owner, k.results, ids)
        b.kill()
        assert b.p.returncode == -signal.SIGKILL
        t0 = time.monotonic()
        k.after_kill(ctx, ids)
        c = stack.enter_context(DaemonProc(k.only, env, tmp_path / "c.log"))
        c.wait_started()
        k.after_restart(ctx, ids)
        counts = wait_exactly_once(sq_owner, k.results, ids, timeout=60)
        recovered_s = time.monotonic() - t0
        a.p.send_signal(signal.SIGCONT)  # the zombie finishes what it held and tries to answer
        time.sleep(1.5)
        counts = count_results(sq_owner, k.results, ids)
        assert a.terminate() == 0, a.text()[-3000:]
        assert c.terminate() == 0, c.text()[-3000:]
    print(f"\n{kind}: {n_held} in flight (A frozen, B killed), {len(before)} of {len(ids)} answered before; "
          f"all answered {recovered_s:.1f}s after the kill")
    assert_exactly_once(counts, ids)
    bad = [r for r in result_bodies(sq_owner, k.results, ids) if not k.check(r)]
    assert not bad, f"wrong results: {bad[:3]}"
    for q in k.queues:
        assert sq_owner.execute(f"SELECT count(*) AS n FROM pgmq.q_{q} WHERE message->>'id' = ANY(%s)",
                                (ids,)).fetchone()["n"] == 0, f"requests left on {q}"
    if k.fenced_log:
        assert k.fenced_log in a.text(), "the zombie's late results were not fenced"


def test_sigterm_finishes_in_flight_nexus_work_and_reads_nothing_new(s, clean_queues, sq_owner, slow_route, provider,
                                                                     tmp_path):
    """SIGTERM with 2 slow calls in flight: both finished within the grace period, the rest never read, exit 0."""
    # one request per read: what a slot holds is what it works on (a batch's read-ahead is handed back)
    env = {"NEXUS_CONCURRENCY": "2", "SHARED_QUEUE_VT_S": "2", "SHARED_QUEUE_POLL_MS": "200", "CHAOS_KEY": "k",
           "SHARED_QUEUE_BATCH_SIZE": "1"}
    with DaemonProc("nexus", env, tmp_path / "d.log", grace=10) as d:
        d.wait_started()
        ids = NexusKind().send({"s": s}, 0) + NexusKind().send({"s": s}, 1)
        _wait(lambda: in_flight(sq_owner, "llm_requests", ids) == 2, 20, "2 requests in flight")
        t0 = time.monotonic()
        rc = d.terminate()
        took = time.monotonic() - t0
    assert rc == 0, d.text()
    assert "shutdown requested" in d.text() and "daemon stopped (0 in-flight released)" in d.text()
    counts = count_results(sq_owner, ("llm_results",), ids)
    assert 2 <= len(counts) <= 4 and all(v == 1 for v in counts.values()), counts  # in-flight finished
    unread = sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests WHERE read_ct = 0 "
                              "AND message->>'id' = ANY(%s)", (ids,)).fetchone()["n"]
    assert unread == len(ids) - len(counts), "the daemon read new work after SIGTERM"
    assert took < 10, f"shutdown took {took:.1f}s"


def test_sigterm_releases_nexus_work_that_outlives_the_grace(s, clean_queues, sq_owner, slow_route, provider,
                                                            tmp_path):
    """Grace 0.3 s under 1 s calls: the in-flight requests are released at once (visible, no result), exit 0;
    a new daemon answers them exactly once without waiting for any lease."""
    # one request per read: what a slot holds is what it works on (a batch's read-ahead is handed back)
    env = {"NEXUS_CONCURRENCY": "2", "SHARED_QUEUE_VT_S": "2", "SHARED_QUEUE_POLL_MS": "200", "CHAOS_KEY": "k",
           "SHARED_QUEUE_BATCH_SIZE": "1"}
    log = tmp_path / "d.log"
    with DaemonProc("nexus", env, log, grace=0.3) as d:
        d.wait_started()
        ids = NexusKind().send({"s": s}, 0) + NexusKind().send({"s": s}, 1)
        _wait(lambda: in_flight(sq_owner, "llm_requests", ids) == 2, 20, "2 requests in flight")
        rc = d.terminate()
    assert rc == 0, d.text()
    assert "daemon stopped (2 in-flight released)" in d.text(), d.text()
    rows = sq_owner.execute("SELECT read_ct, vt <= now() AS visible FROM pgmq.q_llm_requests "
                            "WHERE message->>'id' = ANY(%s)", (ids,)).fetchall()
    assert len(rows) == len(ids) and all(r["visible"] for r in rows), rows
    assert sum(r["read_ct"] for r in rows) == 2 and not count_results(sq_owner, ("llm_results",), ids)
    slow_route.execute("SELECT nexus.set_route('chaos-slow', ARRAY['offline'])")  # the rest answers at once
    t0 = time.monotonic()
    with DaemonProc("nexus", env, log) as d2:
        d2.wait_started()
        counts = wait_exactly_once(sq_owner, ("llm_results",), ids, timeout=20, settle_s=0.5)
        assert time.monotonic() - t0 < 15, "released requests waited for a lease"
        assert d2.terminate() == 0
    assert_exactly_once(counts, ids)


def _pg_ctl(c: Cluster, *args: str) -> None:
    subprocess.run(_as_user(_os_user(), [str(bindir() / "pg_ctl"), *args, "-D", str(c.data_dir)]),
                   check=True, capture_output=True, timeout=60)


def test_postgres_down_at_start_then_crashed_under_300_requests(s, clean_queues, tmp_path):
    """`daemon --only nexus,hitl,heartbeat` started while PostgreSQL is down: it stays up (no crash loop) and
    serves within 10 s of the server being ready. Then 300 requests (offline provider) and PostgreSQL stopped
    -m immediate mid-way and started again: the daemon never exits, answers again within 10 s of the server
    being ready, all 300 exactly once, none dead-lettered, no error results; heartbeats resume."""
    c = Cluster(s)
    env = {"NEXUS_CONCURRENCY": "3", "SHARED_QUEUE_VT_S": "5", "SHARED_QUEUE_POLL_MS": "200", "NEXUS_WEB_PORT": "0",
           "NEXUS_HITL_TICK_S": "0.5", "ORCHESTRATOR_HEARTBEAT_S": "1"}
    ids = [ulid() for _ in range(300)]
    _pg_ctl(c, "stop", "-m", "fast")
    try:
        with DaemonProc("nexus,hitl,heartbeat", env, tmp_path / "d.log") as d:
            d.wait_started()
            time.sleep(2)
            assert d.p.poll() is None, f"the daemon exited while PostgreSQL was down:\n{d.text()[-2000:]}"
            assert "Connection refused" in d.text() or "connection failed" in d.text(), d.text()[-2000:]
            _pg_ctl(c, "start", "-w", "-l", str(c.log_file))
            c.wait_ready()
            ready_at = time.monotonic()
            with Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="chaos", pool_size=1) as b:
                out = b.request("llm_requests", {"agent_id": "chaos", "task_type": "chat", "messages": PROMPT},
                                reply_to="llm_results", timeout=20)
                first_s = time.monotonic() - ready_at
                assert out["model"] == "offline"
                b.publish_batch("llm_requests", [{"id": i, "agent_id": "chaos", "task_type": "chat",
                                                  "messages": PROMPT} for i in ids])
            with connect(owner_conninfo(s, "shared_queue")) as owner:
                _wait(lambda: len(count_results(owner, ("llm_results",), ids)) >= 60, 30, "60 answers")
            _pg_ctl(c, "stop", "-m", "immediate")
            time.sleep(2)
            assert d.p.poll() is None, "the daemon exited while PostgreSQL was down"
            _pg_ctl(c, "start", "-w", "-l", str(c.log_file))
            c.wait_ready()
            ready_at = time.monotonic()
            with connect(owner_conninfo(s, "shared_queue")) as owner:
                answered = len(count_results(owner, ("llm_results",), ids))
                _wait(lambda: len(count_results(owner, ("llm_results",), ids)) > answered, 30,
                      "the daemon to answer again after the restart", step=0.05)
                resumed_s = time.monotonic() - ready_at
                counts = wait_exactly_once(owner, ("llm_results",), ids, timeout=60)
                _wait(lambda: owner.execute("SELECT count(*) AS n FROM pgmq.q_instance_heartbeat "
                                            "WHERE enqueued_at > now() - interval '3 seconds'").fetchone()["n"],
                      10, "heartbeats after the restart")
                bad = [r for r in result_bodies(owner, ("llm_results",), ids)
                       if r.get("error") or r.get("model") != "offline"]
                dead = owner.execute("SELECT count(*) AS n FROM pgmq.q_dead_letters "
                                     "WHERE message->'message'->>'id' = ANY(%s)", (ids,)).fetchone()["n"]
            assert d.p.poll() is None, "the daemon exited"
            assert d.terminate() == 0, d.text()[-3000:]
    finally:
        if not c.running():
            _pg_ctl(c, "start", "-w", "-l", str(c.log_file))
    print(f"\nstarted while down: answered {first_s:.2f}s after PostgreSQL was ready; crashed under load: answered "
          f"again {resumed_s:.2f}s after it was ready ({answered} of 300 before)")
    assert first_s < 10, f"the daemon started while PostgreSQL was down served only {first_s:.1f}s after it was ready"
    assert resumed_s < 10, f"the daemon resumed only {resumed_s:.1f}s after the server was ready"
    assert_exactly_once(counts, ids)
    assert dead == 0, "requests were dead-lettered because the database restarted"
    assert not bad, f"error results after the restart: {bad[:3]}"


def test_nexus_daemon_connections_killed_repeatedly(s, clean_queues, sq_owner, admin, tmp_path):
    """Every svc_nexus connection (bus, wake-ups, router) terminated every 100 ms for 6 s under 200 requests:
    the daemon stays up, every request answered exactly once, none dead-lettered, no error results."""
    env = {"NEXUS_CONCURRENCY": "3", "SHARED_QUEUE_VT_S": "2", "SHARED_QUEUE_POLL_MS": "200"}
    stop = threading.Event()
    killed = [0]

    def terminator() -> None:
        a = admin("postgres")
        while not stop.is_set():
            killed[0] += a.execute("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                                   "WHERE usename = 'svc_nexus'").fetchone()["n"]
            stop.wait(0.1)

    with DaemonProc("nexus", env, tmp_path / "d.log") as d:
        d.wait_started()
        t = threading.Thread(target=terminator, daemon=True)
        t.start()
        try:
            ids = _send(s, "llm_requests", [{"task_type": "chat", "messages": PROMPT}] * 200)
            time.sleep(float(os.environ.get("CHAOS_STORM_S", "6")))
        finally:
            stop.set()
            t.join(5)
        healed = time.monotonic()
        counts = wait_exactly_once(sq_owner, ("llm_results",), ids, timeout=60, settle_s=0)
        drained_s = time.monotonic() - healed
        counts = wait_exactly_once(sq_owner, ("llm_results",), ids, timeout=1)
        assert d.p.poll() is None, "the daemon exited"
        assert d.terminate() == 0, d.text()[-3000:]
    failed = d.text().count("connection was lost mid-way")
    print(f"\n{killed[0]} connections terminated; {failed} handlers lost the database mid-way and were retried; "
          f"all answered {drained_s:.1f}s after the terminations stopped")
    assert_exactly_once(counts, ids)
    bad = [r for r in result_bodies(sq_owner, ("llm_results",), ids) if r.get("error") or r.get("model") != "offline"]
    assert not bad, f"error results: {bad[:3]}"
    dead = sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_dead_letters WHERE message->'message'->>'id' = ANY(%s)",
                            (ids,)).fetchone()["n"]
    charged = sq_owner.execute("SELECT count(*) AS n FROM pgmq.a_llm_requests WHERE message->>'id' = ANY(%s) "
                               "AND headers ? 'last_error'", (ids,)).fetchone()["n"]
    assert dead == 0 and killed[0] > 20
    assert charged == 0, f"{charged} requests were charged a failed attempt for the database going away"
    assert drained_s < 10, f"the daemon needed {drained_s:.1f}s to recover after the connections stopped dropping"


def test_connection_cut_between_the_real_daemon_and_postgres(s, clean_queues, sq_owner, tmp_path):
    """The nexus daemon reaches PostgreSQL through a TCP proxy on 127.0.0.1 (SHARED_QUEUE_DB_URL, NEXUS_DB_URL);
    the proxy cuts every connection for 3 s (1.5x the visibility timeout) while requests keep arriving:
    after it heals the daemon answers everything exactly once, within 10 s, and never exits."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    c = Cluster(s)
    proxy = CuttableProxy(c.port)

    def via_proxy(db: str) -> str:
        return make_conninfo(**{**conninfo_to_dict(role_conninfo(s, db, "svc_nexus")), "port": proxy.port})

    env = {"NEXUS_CONCURRENCY": "2", "SHARED_QUEUE_VT_S": "2", "SHARED_QUEUE_POLL_MS": "200",
           "SHARED_QUEUE_DB_URL": via_proxy("shared_queue"), "NEXUS_DB_URL": via_proxy("nexus")}
    try:
        with DaemonProc("nexus", env, tmp_path / "d.log") as d:
            d.wait_started()
            ids = _send(s, "llm_requests", [{"task_type": "chat", "messages": PROMPT}] * 100)
            _wait(lambda: len(count_results(sq_owner, ("llm_results",), ids)) >= 20, 30, "20 answers")
            proxy.cut()
            ids += _send(s, "llm_requests", [{"task_type": "chat", "messages": PROMPT}] * 100)
            time.sleep(3)
            assert d.p.poll() is None, "the daemon exited while cut off"
            answered = len(count_results(sq_owner, ("llm_results",), ids))
            proxy.heal()
            healed = time.monotonic()
            _wait(lambda: len(count_results(sq_owner, ("llm_results",), ids)) > answered, 20,
                  "the daemon to answer again after the cut healed", step=0.05)
            resumed_s = time.monotonic() - healed
            counts = wait_exactly_once(sq_owner, ("llm_results",), ids, timeout=60)
            assert d.terminate() == 0, d.text()[-3000:]
    finally:
        proxy.close()
    print(f"\nanswered again {resumed_s:.2f}s after the proxy healed ({answered} of 200 before)")
    assert resumed_s < 10
    assert_exactly_once(counts, ids)


def _hostile_llm_requests(rnd: random.Random, n: int) -> list[dict]:
    """Bodies that a careless or hostile agent could send: odd message shapes, extreme numbers, unknown
    models, unicode, extra keys. Some are refused at send; the rest must reach the worker."""
    junk = [None, True, -1, 0, 2**31, 2**63, 1e308, "", "x" * 5000, "\u202e\U0001f4a5", [], {}, [[[[]]]],
            {"role": "user"}, {"content": 1}, {"role": "tool", "content": {"a": [1, 2]}}, "DROP TABLE x;--"]
    out = []
    for _ in range(n):
        msgs = [rnd.choice(junk + [{"role": "user", "content": rnd.choice(["hi", "", "\u00e9" * 100])}])
                for _ in range(rnd.randint(0, 4))]
        b = {"agent_id": rnd.choice(["chaos", "", "a" * 300, "\u0627\u0644"]),
             "task_type": rnd.choice(["chat", "", "no-such-task", "\U0001f600" * 50]), "messages": msgs}
        if rnd.random() < 0.4:
            b["model"] = rnd.choice(["offline", "no-such-model", "", "m" * 500])
        if rnd.random() < 0.4:
            b["max_tokens"] = rnd.choice([0, -5, 1, 2**31, 2**62, 10**20])
        if rnd.random() < 0.3:
            b[rnd.choice(["extra", "usage", "priority", "$where"])] = rnd.choice(junk)
        out.append(b)
    return out


def test_hostile_requests_through_the_real_nexus_daemon(s, clean_queues, sq_owner, tmp_path):
    """300 hostile llm_requests: each is refused at send, or answered exactly once (a result or an error
    result), or dead-lettered with its reason; never two of those; the daemon stays up and plain requests
    sent after them are answered at once."""
    from orchestrator.core.messages import ValidationError

    env = {"NEXUS_CONCURRENCY": "3", "SHARED_QUEUE_VT_S": "5", "SHARED_QUEUE_POLL_MS": "200"}
    rnd = random.Random(7)
    sent, refused = [], 0
    with DaemonProc("nexus", env, tmp_path / "d.log") as d, \
            Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="chaos", pool_size=1) as b:
        d.wait_started()
        for body in _hostile_llm_requests(rnd, 300):
            rid = ulid()
            try:
                b.publish("llm_requests", {**body, "id": rid})
                sent.append(rid)
            except (ValidationError, ValueError):
                refused += 1
        plain = _send(s, "llm_requests", [{"task_type": "chat", "messages": PROMPT}] * 20)
        t0 = time.monotonic()
        assert_exactly_once(wait_exactly_once(sq_owner, ("llm_results",), plain, timeout=30, settle_s=0), plain)
        plain_s = time.monotonic() - t0

        def settled() -> tuple[dict, dict]:
            # speed the retries' backoff up (as test_daemon_cli does) so failing requests reach the DLQ quickly
            sq_owner.execute("UPDATE pgmq.q_llm_requests SET vt = now() WHERE vt > now() AND headers ? 'last_error'")
            res = count_results(sq_owner, ("llm_results",), sent)
            dead = {r["rid"]: r["error"] for r in sq_owner.execute(
                "SELECT message->'message'->>'id' AS rid, message->>'error' AS error FROM pgmq.q_dead_letters "
                "WHERE message->'message'->>'id' = ANY(%s)", (sent,))}
            return res, dead

        _wait(lambda: len(set().union(*settled())) == len(sent), 40, "every hostile request settled", step=0.3)
        time.sleep(0.5)
        res, dead = settled()
        assert d.p.poll() is None, "the daemon exited"
        assert d.terminate() == 0, d.text()[-3000:]
    print(f"\n{refused} refused at send, {len(res)} answered, {len(dead)} dead-lettered; "
          f"20 plain requests sent after them answered in {plain_s:.2f}s")
    assert not set(res) & set(dead), "a request was both answered and dead-lettered"
    assert all(v == 1 for v in res.values()), "duplicate results"
    assert all(e and len(e) > 10 for e in dead.values()), f"dead letters without a reason: {dead}"
    reasons = sorted({e.split(";")[-1].split("\n")[0][:90] for e in dead.values()})
    print("dead-letter reasons:", reasons)
