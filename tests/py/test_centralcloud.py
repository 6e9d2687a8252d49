"""CentralCloud end to end on the real cluster: two Singularity instances publish patterns ->
aggregated once with the right counts -> aggregated_patterns in both instances' inboxes; heartbeats,
statistics, packages; every job twice is idempotent; Git export and template distribution into
temporary repositories; what svc_centralcloud may not do."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import psycopg
import pytest

from orchestrator.bus import Bus
from orchestrator.centralcloud import JOBS, run_job
from orchestrator.db import admin_conninfo, connect, owner_conninfo, role_conninfo

INST = "cc2"
ROLE2 = f"svc_singularity_{INST}"
PW2 = "cc2-test-password"
TABLES = ["received", "instance_patterns", "patterns", "packages", "pattern_syncs", "instances", "templates",
          "template_distributions", "exports"]


@pytest.fixture(scope="module")
def second_instance(s):
    """Instance cc2 with a LOGIN role of its own (as migrate would make it) and its inbox queues."""
    with connect(admin_conninfo(s, "postgres")) as a:
        if not a.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE2,)).fetchone():
            a.execute(f"CREATE ROLE {ROLE2} LOGIN PASSWORD '{PW2}'")
        a.execute(f"GRANT CONNECT ON DATABASE shared_queue TO {ROLE2}")
    with connect(owner_conninfo(s, "shared_queue")) as o:
        o.execute("SET client_min_messages = warning")
        o.execute("SELECT bus.ensure_instance(%s, %s)", (INST, ROLE2))
    yield INST
    with connect(owner_conninfo(s, "shared_queue")) as o:
        o.execute("SET client_min_messages = warning")
        for r in o.execute("SELECT queue_name FROM bus.queues WHERE instance_id = %s", (INST,)).fetchall():
            o.execute("SELECT bus.drop_queue(%s)", (r["queue_name"],))
        o.execute("DELETE FROM bus.instances WHERE instance_id = %s", (INST,))
    with connect(admin_conninfo(s, "shared_queue")) as a:
        a.execute("SET client_min_messages = error")
        a.execute(f"DROP OWNED BY {ROLE2}")
        # grants made by own_shared_queue on pgmq's extension objects survive DROP OWNED
        a.execute("SET ROLE own_shared_queue")
        a.execute(f"REVOKE ALL ON SCHEMA pgmq, bus, ops FROM {ROLE2}")
        a.execute(f"REVOKE ALL ON pgmq.meta, pgmq.notify_insert_throttle FROM {ROLE2}")
        a.execute("RESET ROLE")
    with connect(admin_conninfo(s, "postgres")) as a:
        a.execute(f"REVOKE CONNECT ON DATABASE shared_queue FROM {ROLE2}")
        a.execute(f"DROP ROLE {ROLE2}")


@pytest.fixture
def cc_clean(s, clean_queues):
    """Empty CentralCloud's state (the test owns it) and every live queue."""
    with connect(owner_conninfo(s, "centralcloud")) as c:
        c.execute("TRUNCATE " + ", ".join(f"centralcloud.{t}" for t in TABLES))


def _pattern(key, kind, occ, conf, packages=()):
    return {"key": key, "kind": kind, "occurrences": occ, "confidence": conf, "packages": list(packages),
            "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-02T00:00:00Z"}


def _inbox(s, queue: str) -> list[dict]:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        return [r["message"] for r in c.execute(f"SELECT message FROM pgmq.q_{queue} ORDER BY msg_id").fetchall()]


def _snapshot(s) -> dict:
    with connect(owner_conninfo(s, "centralcloud")) as c:
        out = {}
        for t, order in [("instance_patterns", "instance_id, key"), ("patterns", "key"), ("packages", "package"),
                         ("pattern_syncs", "queue_name"), ("instances", "instance_id, service"),
                         ("stats_latency", "1, 2, 3, 4"), ("stats_llm", "1, 2"), ("received", "1, 2")]:
            cols = "*" if t not in ("pattern_syncs",) else "queue_name, digest, patterns, messages, sent_at"
            out[t] = c.execute(f"SELECT {cols} FROM centralcloud.{t} ORDER BY {order}").fetchall()
        return out


def test_two_instances_end_to_end_and_idempotent(s, second_instance, cc_clean, bus_for):
    one = bus_for("svc_singularity")
    two = Bus(role_conninfo(s, "shared_queue", ROLE2, password=PW2), source=ROLE2, pool_size=1)
    try:
        one.publish("pattern_messages", {"type": "pattern_detection", "instance_id": "default", "timestamp": "t",
                                         "patterns": [_pattern("python.fstring", "syntax", 3, 0.8, ["python"]),
                                                      _pattern("elixir.genserver", "framework", 1, 0.5, ["otp"])]})
        one.publish("learned_patterns", {"type": "learned_patterns", "instance_id": "default",
                                         "artifacts": [_pattern("tests.pytest_fixture", "practice", 5, 0.9, ["pytest"])]})
        two.publish("pattern_messages", {"type": "pattern_detection", "instance_id": INST,
                                         "patterns": [_pattern("python.fstring", "syntax", 4, 0.6, ["python"])]})
        two.publish("instance_heartbeat", {"instance_id": INST, "service": "singularity", "at": "now", "stats": {}})
    finally:
        two.close()

    out = run_job(s, "aggregate")
    assert out.startswith("ok: 3 messages (0 duplicates dropped), 4 patterns folded, 0 rejected"), out
    with connect(owner_conninfo(s, "centralcloud")) as c:
        rows = {r["key"]: r for r in c.execute("SELECT * FROM centralcloud.patterns").fetchall()}
    assert set(rows) == {"python.fstring", "elixir.genserver", "tests.pytest_fixture"}
    f = rows["python.fstring"]
    assert (f["instances"], f["total_occurrences"], f["rank"], float(f["confidence"])) == (2, 7, 1, round((3 * .8 + 4 * .6) / 7, 4))
    assert (rows["tests.pytest_fixture"]["total_occurrences"], rows["tests.pytest_fixture"]["rank"]) == (5, 2)
    assert (rows["elixir.genserver"]["instances"], rows["elixir.genserver"]["rank"]) == (1, 3)

    assert run_job(s, "pattern-sync").startswith("ok: 3 patterns in 1 message(s) sent to 2 instance queue(s)")
    for q in ("knowledge_updates", f"knowledge_updates_{INST}"):
        msgs = _inbox(s, q)
        assert [m["type"] for m in msgs] == ["aggregated_patterns"], q
        assert [p["key"] for p in msgs[0]["patterns"]] == ["python.fstring", "tests.pytest_fixture", "elixir.genserver"]
        assert msgs[0]["patterns"][0] == {"key": "python.fstring", "kind": "syntax", "instances": 2,
                                          "total_occurrences": 7, "confidence": float(f["confidence"]), "rank": 1,
                                          "packages": ["python"]}

    for job in ("heartbeats", "statistics", "package-sync"):
        assert run_job(s, job).startswith("ok:"), job
    with connect(owner_conninfo(s, "centralcloud")) as c:
        st = c.execute("SELECT status FROM centralcloud.instance_status WHERE instance_id = %s", (INST,)).fetchone()
        assert st["status"] == "healthy"
        pk = {r["package"]: r for r in c.execute("SELECT * FROM centralcloud.packages").fetchall()}
        assert (pk["python"]["instances"], pk["python"]["occurrences"]) == (2, 7)
        assert c.execute("SELECT sum(messages) AS n FROM centralcloud.stats_latency WHERE bucket = 'day'"
                         " AND queue_name = 'pattern_messages'").fetchone()["n"] >= 2

    # Singularity's side folds its inbox into core.global_knowledge (when that module is present).
    with connect(owner_conninfo(s, "singularity")) as c:
        has_core = c.execute("SELECT to_regprocedure('core.run_job(text)') IS NOT NULL AS x").fetchone()["x"]
    if has_core:
        with connect(role_conninfo(s, "singularity", "svc_singularity")) as c:
            c.execute("SELECT core.run_job('consume_inbox')")
            n = c.execute("SELECT count(*) AS n FROM core.global_knowledge WHERE key = 'python.fstring'"
                          " AND instances = 2 AND total_occurrences = 7").fetchone()["n"]
            assert n == 1

    before = _snapshot(s)
    for job in ("aggregate", "pattern-sync", "heartbeats", "statistics", "package-sync"):
        assert run_job(s, job).startswith(("ok:", "skipped:")), job
    assert _snapshot(s) == before, "running every job a second time changed something"
    assert len(_inbox(s, f"knowledge_updates_{INST}")) == (0 if has_core else 1)


def test_redelivery_after_crash_is_dropped(s, cc_clean, bus_for):
    """A batch folded and committed here but never acked there comes back; the ledger drops it."""
    bus_for("svc_singularity").publish("pattern_messages", {"type": "pattern_detection", "instance_id": "default",
                                                            "patterns": [_pattern("k.crash", "syntax", 2, 0.5)]})
    with connect(role_conninfo(s, "centralcloud", "svc_centralcloud")) as c:
        c.execute("SELECT centralcloud._read_batch('pattern_messages', 10, '_batch_patterns')")
        assert c.execute("SELECT centralcloud._fold_patterns() AS r").fetchone()["r"]["new"] == 1
        # "crash" before the ack: make the message visible again at once
        ids = [r["msg_id"] for r in c.execute("SELECT msg_id FROM centralcloud._batch_patterns").fetchall()]
    with connect(owner_conninfo(s, "shared_queue")) as o:
        o.execute("UPDATE pgmq.q_pattern_messages SET vt = now() WHERE msg_id = ANY(%s)", (ids,))
    out = run_job(s, "aggregate")
    assert "1 messages (1 duplicates dropped)" in out, out
    with connect(owner_conninfo(s, "centralcloud")) as c:
        assert c.execute("SELECT occurrences FROM centralcloud.instance_patterns WHERE key = 'k.crash'").fetchone()["occurrences"] == 2
    assert _inbox(s, "pattern_messages") == []


def test_centralcloud_role_limits(s):
    """svc_centralcloud: no writes to request/event queues or archives, no other service database."""
    with connect(role_conninfo(s, "shared_queue", "svc_centralcloud")) as c:
        for q, msg in [("llm_requests", {"type": "llm_request", "agent_id": "a", "task_type": "t", "messages": ["x"]}),
                       ("pattern_messages", {"type": "pattern_detection", "instance_id": "x", "patterns": []}),
                       ("job_requests", {"type": "job_request", "code": "1", "language": "python", "mode": "run"})]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT pgmq.send(%s, %s::jsonb)", (q, json.dumps(msg)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM pgmq.read('llm_requests', 1, 1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO pgmq.a_llm_results (msg_id, vt, message) VALUES (-1, now(), '{}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM pgmq.a_pattern_messages")
        assert c.execute("SELECT count(*) >= 0 AS ok FROM pgmq.a_llm_requests").fetchone()["ok"]  # archives: read-only
    for db in ("singularity", "nexus", "genesis"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect(role_conninfo(s, db, "svc_centralcloud"))


def test_unknown_job_and_all_jobs_named():
    assert run_job(None, "nope").startswith("failed: unknown job 'nope'")  # type: ignore[arg-type]
    assert set(JOBS) == {"aggregate", "statistics", "package-sync", "pattern-sync", "knowledge-export",
                         "template-distribution", "heartbeats"}


def test_cron_rows(s):
    with connect(admin_conninfo(s, "postgres")) as a:
        jobs = {r["jobname"]: r for r in a.execute("SELECT jobname, schedule, username, database FROM cron.job"
                                                  " WHERE jobname LIKE 'centralcloud:%'").fetchall()}
    assert {j: r["schedule"] for j, r in jobs.items()} == {
        "centralcloud:aggregate": "0 * * * *", "centralcloud:statistics": "5 * * * *",
        "centralcloud:pattern_sync": "10 * * * *", "centralcloud:package_sync": "20 2 * * *",
        "centralcloud:heartbeats": "* * * * *"}
    assert {r["username"] for r in jobs.values()} == {"svc_centralcloud"}


def test_stats_cli_and_plot(s, tmp_path, run_cli):
    png = tmp_path / "stats.png"
    r = run_cli("stats", "--days", "3", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    for title in ("Messages per type per day", "Queue latency", "Approval rate", "Questions per agent",
                  "Top patterns", "LLM usage and cost"):
        assert title in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli("stats", "--days", "0")
    assert bad.returncode != 0 and "--days must be at least 1" in bad.stderr


def _today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(repo)}).stdout.strip()
