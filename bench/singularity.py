"""Singularity: learning over 100k and 1M analysis rows (linearity), assignment of 100k tasks to 1,000
agents, and the outbox drain into shared_queue, each next to a bare baseline in the same run.

Runs in a throwaway instance (`singularity_bench`, removed afterwards) so the default instance and its
CDC slot are untouched. BENCH_SINGULARITY_N scales the large learning run (default 1,000,000).
"""

from __future__ import annotations

import os
import time

from bench.common import ready
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo
from orchestrator.infra.instances import add_instance, remove_instance

INST = "bench"
DB = f"singularity_{INST}"
ROLE = f"svc_singularity_{INST}"
BIG = int(os.environ.get("BENCH_SINGULARITY_N", "1000000"))
DRAIN_N = int(os.environ.get("BENCH_SINGULARITY_DRAIN_N", "20000"))
BATCH = 200  # outbox.drain_all's default: one pgmq.send_batch per 200 messages


def _load_results(c, n: int) -> None:
    """N analysis results of 100 agents, 1-3 patterns each out of 2,000 keys."""
    c.execute("TRUNCATE core.analysis_results, core.learned_patterns, outbox.messages")
    c.execute("""INSERT INTO core.analysis_results (agent_id, result, confidence)
                 SELECT 'ag' || (g %% 100),
                        jsonb_build_object('patterns', (SELECT jsonb_agg(jsonb_build_object(
                            'key', 'lang.pattern' || ((g * 7 + k * 131) %% 2000), 'kind', 'syntax',
                            'packages', jsonb_build_array('pkg' || (g + k) %% 50)))
                          FROM generate_series(1, 1 + g %% 3) k)),
                        (g %% 100) / 100.0
                   FROM generate_series(1, %s) g""", (n,))
    c.execute("VACUUM ANALYZE core.analysis_results")


def _time(c, q: str) -> float:
    t0 = time.perf_counter()
    c.execute(q).fetchall()
    return time.perf_counter() - t0


def _learning(s) -> list[tuple[str, str, str]]:
    out = {}
    with connect(admin_conninfo(s, DB)) as a, connect(role_conninfo(s, DB, ROLE)) as c:
        a.execute("SET synchronous_commit = off")
        a.execute("INSERT INTO core.agents (id) SELECT 'ag' || g FROM generate_series(0, 99) g ON CONFLICT DO NOTHING")
        for n in (100_000, BIG):
            _load_results(a, n)
            bare = _time(a, """SELECT p->>'key', count(*), avg(confidence) FROM core.analysis_results,
                                      jsonb_array_elements(result->'patterns') p GROUP BY 1""")
            learn = _time(c, "SELECT core.learn_patterns_from_analysis()")
            left = a.execute("SELECT count(*) AS n FROM core.analysis_results WHERE NOT learned").fetchone()["n"]
            assert left == 0, f"{left} results not learned"
            out[n] = (learn, bare)
        a.execute("TRUNCATE core.analysis_results, core.learned_patterns, outbox.messages")
    (s1, _b1), (s2, b2) = out[100_000], out[BIG]
    return [
        ("learn_patterns_from_analysis over 100k results (s)", f"{s1:.1f}", "-"),
        (f"learn_patterns_from_analysis over {BIG // 1000}k results (s)", f"{s2:.1f}", "<= 60 s"),
        (f"learning cost {BIG // 1000}k / 100k", f"{s2 / s1:.1f}x", "<= 11x (linear)"),
        (f"learning vs a bare GROUP BY over the same {BIG // 1000}k rows", f"{s2:.1f} vs {b2:.1f} s = {s2 / b2:.1f}x", "-"),
    ]


def _assignment(s) -> list[tuple[str, str, str]]:
    with connect(admin_conninfo(s, DB)) as a, connect(role_conninfo(s, DB, ROLE)) as c:
        a.execute("SET synchronous_commit = off")
        a.execute("TRUNCATE core.tasks, core.agents CASCADE")
        a.execute("INSERT INTO core.agents (id, capacity) SELECT 'w' || g, 100 FROM generate_series(1, 1000) g")
        a.execute("""INSERT INTO core.tasks (id, kind, priority)
                     SELECT ops.ulid(), 'k', g % 10 FROM generate_series(1, 100000) g""")
        a.execute("VACUUM ANALYZE core.tasks")
        a.execute("CREATE TEMP TABLE ids AS SELECT id FROM core.tasks")
        with a.transaction(force_rollback=True):
            bare = _time(a, "UPDATE core.tasks SET kind = 'k2' WHERE id IN (SELECT id FROM ids) RETURNING 1")
        t = _time(c, "SELECT core.assign_pending_tasks()")
        n = a.execute("SELECT count(*) AS n FROM core.tasks WHERE status = 'assigned'").fetchone()["n"]
        over = a.execute("SELECT count(*) AS n FROM core.agents WHERE load > capacity").fetchone()["n"]
        assert n == 100_000 and over == 0, (n, over)
        a.execute("TRUNCATE core.tasks, core.agents CASCADE")
    return [("assign_pending_tasks: 100k pending tasks, 1,000 agents (s)", f"{t:.2f}", "<= 5 s"),
            ("assignment vs a bare UPDATE of the same 100k rows", f"{t:.2f} vs {bare:.2f} s = {t / bare:.1f}x", "-")]


def _drain(s) -> list[tuple[str, str, str]]:
    msg = ("jsonb_build_object('type', 'heartbeat', 'instance_id', 'bench', 'service', 'singularity', "
           "'at', '2026-01-01T00:00:00Z', 'stats', jsonb_build_object('n', g))")
    with connect(admin_conninfo(s, DB)) as a, connect(role_conninfo(s, DB, "own_singularity")) as c, \
            connect(owner_conninfo(s, "shared_queue")) as sq:
        a.execute("TRUNCATE outbox.messages")
        a.execute(f"INSERT INTO outbox.messages (id, queue, message) SELECT ops.ulid(), 'instance_heartbeat', {msg} "
                  "FROM generate_series(1, %s) g", (DRAIN_N,))
        t0 = time.perf_counter()
        c.execute("CALL outbox.drain_all(%s, %s)", (BATCH, DRAIN_N))  # what pg_cron runs, as the owner
        t = time.perf_counter() - t0
        r = a.execute("SELECT sent, error FROM outbox.drain_runs ORDER BY id DESC LIMIT 1").fetchone()
        assert r["sent"] == DRAIN_N, r
        # baseline: the same messages sent straight into pgmq (send_batch, same batch size), no outbox, no dblink
        t0 = time.perf_counter()
        for start in range(0, DRAIN_N, BATCH):
            sq.execute(f"SELECT count(*) FROM pgmq.send_batch('instance_heartbeat', ARRAY(SELECT {msg} "
                       "FROM generate_series(%s::int, %s::int) g))", (start + 1, min(start + BATCH, DRAIN_N)))
        raw = time.perf_counter() - t0
        sq.execute("DELETE FROM pgmq.q_instance_heartbeat WHERE message->>'instance_id' = 'bench'")
    rate, raw_rate = DRAIN_N / t, DRAIN_N / raw
    return [(f"outbox drain into shared_queue, {DRAIN_N // 1000}k messages (msg/s)", f"{rate:,.0f}", ">= 5,000 msg/s"),
            ("drain vs raw pgmq.send_batch of the same messages", f"{rate:,.0f} vs {raw_rate:,.0f} msg/s = "
             f"{rate / raw_rate:.2f}x", "-")]


def run() -> list[tuple[str, str, str]]:
    s = ready()
    remove_instance(s, INST)
    add_instance(s, INST)
    try:
        with connect(admin_conninfo(s, "postgres")) as pg:  # no pg_cron job of the bench instance runs meanwhile
            pg.execute("UPDATE cron.job SET active = false WHERE jobname LIKE %s", (f"{DB}:%",))
        parts = os.environ.get("BENCH_SINGULARITY_PARTS", "assign,drain,learn").split(",")
        return ((_assignment(s) if "assign" in parts else []) + (_drain(s) if "drain" in parts else [])
                + (_learning(s) if "learn" in parts else []))
    finally:
        remove_instance(s, INST)


if __name__ == "__main__":
    for row in run():
        print(row)
