"""CentralCloud: aggregation of 1,000,000 pattern messages from 10 instances (target <= 60 s) and
statistics over 1,000,000 archived messages (target <= 10 s).

Setup is SQL (generate_series straight into pgmq.q_pattern_messages as the superuser, with triggers
off for that session), so it is fast; then the real jobs run as svc_centralcloud: `aggregate` reads
over dblink in batches, folds, commits, acks (archives) -- which is also what puts the 1M messages in
the archive that `statistics` then reads. Baselines in the same run: a bare scan of the same queue
(aggregate) and a bare count over bus.archived_messages (statistics). Bench rows are removed after.
"""

from __future__ import annotations

import os
import time

from orchestrator.centralcloud.jobs import run_job
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo

from .common import ready

N = int(os.environ.get("BENCH_CC_MESSAGES", "1000000"))
INSTANCES = 10
KEYS = 1000


def _generate(s) -> None:
    with connect(admin_conninfo(s, "shared_queue")) as a:
        a.execute("SET session_replication_role = replica")  # no validation/notify triggers for the bulk load
        a.execute("""
            INSERT INTO pgmq.q_pattern_messages (vt, message)
            SELECT now(), jsonb_build_object('type', 'pattern_detection', 'instance_id', 'bench-' || (i %% %(inst)s),
                     'timestamp', '2026-01-01T00:00:00Z',
                     'patterns', jsonb_build_array(
                        jsonb_build_object('key', 'bench.k' || (i %% %(keys)s), 'kind', 'syntax', 'occurrences', 1 + i %% 3,
                                           'confidence', 0.5 + (i %% 50) / 100.0, 'packages', jsonb_build_array('bench-p' || (i %% 20))),
                        jsonb_build_object('key', 'bench.k' || ((i * 7) %% %(keys)s), 'kind', 'practice', 'occurrences', 1,
                                           'confidence', 0.7)))
              FROM generate_series(1, %(n)s) i""", {"inst": INSTANCES, "keys": KEYS, "n": N})
        a.execute("ANALYZE pgmq.q_pattern_messages")


def _cleanup(s) -> None:
    with connect(admin_conninfo(s, "shared_queue")) as a:
        a.execute("DELETE FROM pgmq.q_pattern_messages WHERE message->>'instance_id' LIKE 'bench-%'")
        a.execute("DELETE FROM pgmq.a_pattern_messages WHERE message->>'instance_id' LIKE 'bench-%'")
    with connect(owner_conninfo(s, "centralcloud")) as c:
        c.execute("DELETE FROM centralcloud.received WHERE instance_id LIKE 'bench-%'")
        c.execute("DELETE FROM centralcloud.instance_patterns WHERE instance_id LIKE 'bench-%'")
        c.execute("DELETE FROM centralcloud.patterns WHERE key LIKE 'bench.%'")
        c.execute("DELETE FROM centralcloud.packages WHERE package LIKE 'bench-%'")
        c.execute("SELECT centralcloud.rank_patterns()")


def run() -> list[tuple[str, str, str]]:
    s = ready()
    _cleanup(s)
    t0 = time.perf_counter()
    _generate(s)
    gen_s = time.perf_counter() - t0
    with connect(admin_conninfo(s, "shared_queue")) as a:
        t0 = time.perf_counter()
        a.execute("SELECT count(*), sum(jsonb_array_length(message->'patterns')) FROM pgmq.q_pattern_messages").fetchone()
        scan_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = run_job(s, "aggregate")
    agg_s = time.perf_counter() - t0
    with connect(owner_conninfo(s, "centralcloud")) as c:
        got = c.execute("SELECT count(*) AS keys, sum(total_occurrences) AS occ, sum(instances) AS inst"
                        " FROM centralcloud.patterns WHERE key LIKE 'bench.%'").fetchone()
    want_occ = sum(1 + i % 3 for i in range(1, N + 1)) + N
    ok = out.startswith("ok:") and got["occ"] == want_occ and got["keys"] == KEYS  # (other traffic may add messages)

    with connect(owner_conninfo(s, "centralcloud")) as c:
        c.execute("DELETE FROM centralcloud.settings WHERE key = 'stats_watermark'")  # recompute everything
    with connect(admin_conninfo(s, "shared_queue")) as a:
        archived = a.execute("SELECT count(*) AS n FROM bus.archived_messages").fetchone()["n"]
        t0 = time.perf_counter()
        a.execute("SELECT count(*) FROM bus.archived_messages").fetchone()
        count_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sout = run_job(s, "statistics")
    stats_s = time.perf_counter() - t0
    _cleanup(s)
    run_job(s, "statistics")
    return [
        (f"setup: {N:,} pattern messages generated in SQL", f"{gen_s:.1f} s", "-"),
        (f"aggregate {N:,} messages x 2 patterns, {INSTANCES} instances", f"{agg_s:.1f} s ({N / agg_s:,.0f} msg/s)",
         "<= 60 s"),
        ("  result correct (keys, total occurrences)", "yes" if ok else f"NO: {out} {dict(got)}", "yes"),
        ("  vs bare scan of the same queue", f"{agg_s / scan_s:.0f}x ({scan_s:.2f} s)", "-"),
        (f"statistics over {archived:,} archived messages", f"{stats_s:.1f} s", "<= 10 s"),
        ("  vs bare count(*) over bus.archived_messages", f"{stats_s / count_s:.1f}x ({count_s:.2f} s)", "-"),
        ("  statistics job said", sout[:60], "ok"),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
