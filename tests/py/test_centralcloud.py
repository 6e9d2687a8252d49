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

from orchestrator.centralcloud.jobs import JOBS, run_job
from orchestrator.core.bus import Bus
from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo

INST = "cc2"
ROLE2 = f"svc_singularity_{INST}"
PW2 = "cc2-test-password"
TABLES = ["received", "instance_patterns", "patterns", "packages", "pattern_syncs", "instances", "templates",
          "template_distributions", "exports", "job_runs"]


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
    _forget_heartbeats(s, INST)


@pytest.fixture
def cc_clean(s, clean_queues):
    """Empty CentralCloud's state (the test owns it) and every live queue."""
    with connect(owner_conninfo(s, "centralcloud")) as c:
        c.execute("TRUNCATE " + ", ".join(f"centralcloud.{t}" for t in TABLES))


def _forget_heartbeats(s, instance: str) -> None:
    """A removed test instance must not linger in `orchestrator alerts` (it reads the last hour of heartbeats)."""
    with connect(admin_conninfo(s, "shared_queue")) as a:
        for t in ("q_instance_heartbeat", "a_instance_heartbeat"):
            a.execute(f"DELETE FROM pgmq.{t} WHERE message->>'instance_id' = %s", (instance,))


def _pattern(key, kind, occ, conf, packages=()):
    return {"key": key, "kind": kind, "occurrences": occ, "confidence": conf, "packages": list(packages),
            "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-02T00:00:00Z"}


def _inbox(s, queue: str) -> list[dict]:
    with connect(owner_conninfo(s, "shared_queue")) as c:
        return [r["message"] for r in c.execute(f"SELECT message FROM pgmq.q_{queue} ORDER BY msg_id").fetchall()]


def _snapshot(s) -> dict:
    """CentralCloud's state for what this module sends (other services' pg_cron jobs may add traffic)."""
    mine = ("'python.fstring', 'elixir.genserver', 'tests.pytest_fixture'")
    queries = {
        "instance_patterns": f"SELECT * FROM centralcloud.instance_patterns WHERE key IN ({mine}) ORDER BY instance_id, key",
        "patterns": f"SELECT * FROM centralcloud.patterns WHERE key IN ({mine}) ORDER BY key",
        "packages": "SELECT * FROM centralcloud.packages WHERE package IN ('python', 'otp', 'pytest') ORDER BY package",
        "pattern_syncs": "SELECT * FROM centralcloud.pattern_syncs ORDER BY queue_name",
        "instances": f"SELECT * FROM centralcloud.instances WHERE instance_id = '{INST}'",
        "stats": "SELECT * FROM centralcloud.stats_latency WHERE queue_name IN ('pattern_messages', 'learned_patterns')"
                 " ORDER BY 1, 2, 3, 4",
        "received": "SELECT * FROM centralcloud.received WHERE instance_id IN ('default', 'cc2') ORDER BY 1, 2",
    }
    with connect(owner_conninfo(s, "centralcloud")) as c:
        return {k: c.execute(q).fetchall() for k, q in queries.items()}


def test_two_instances_end_to_end_and_idempotent(s, second_instance, cc_clean, bus_for):
    one = bus_for("svc_singularity")
    two = Bus(role_conninfo(s, "shared_queue", ROLE2, password=PW2), source=ROLE2, pool_size=1)
    try:
        one.publish("pattern_messages", {"type": "pattern_detection", "instance_id": "default", "timestamp": "2026-01-01T00:00:00Z",
                                         "patterns": [_pattern("python.fstring", "syntax", 3, 0.8, ["python"]),
                                                      _pattern("elixir.genserver", "framework", 1, 0.5, ["otp"])]})
        one.publish("learned_patterns", {"type": "learned_patterns", "instance_id": "default",
                                         "artifacts": [_pattern("tests.pytest_fixture", "practice", 5, 0.9, ["pytest"])]})
        # a delta enqueued after the total adds to it, although the total's queue is read first
        one.publish("pattern_messages", {"type": "pattern_detection", "instance_id": "default",
                                         "patterns": [_pattern("tests.pytest_fixture", "practice", 2, 0.9, ["pytest"])]})
        two.publish("pattern_messages", {"type": "pattern_detection", "instance_id": INST,
                                         "patterns": [_pattern("python.fstring", "syntax", 4, 0.6, ["python"])]})
        two.publish("instance_heartbeat", {"instance_id": INST, "service": "singularity", "at": "now", "stats": {}})
    finally:
        two.close()

    out = run_job(s, "aggregate")
    assert out.startswith("ok: 4 messages (0 duplicates dropped), 5 patterns folded, 0 rejected"), out
    with connect(owner_conninfo(s, "centralcloud")) as c:
        rows = {r["key"]: r for r in c.execute("SELECT * FROM centralcloud.patterns").fetchall()}
    assert set(rows) == {"python.fstring", "elixir.genserver", "tests.pytest_fixture"}
    f = rows["python.fstring"]
    assert (f["instances"], f["total_occurrences"], f["rank"], float(f["confidence"])) == (2, 7, 1, round((3 * .8 + 4 * .6) / 7, 4))
    assert (rows["tests.pytest_fixture"]["total_occurrences"], rows["tests.pytest_fixture"]["rank"]) == (7, 2)
    assert (rows["elixir.genserver"]["instances"], rows["elixir.genserver"]["rank"]) == (1, 3)

    assert run_job(s, "pattern-sync").startswith("ok: 3 patterns in 1 message(s) sent to 2 instance queue(s)")
    for q in ("knowledge_updates", f"knowledge_updates_{INST}"):
        msgs = _inbox(s, q)
        assert [m["type"] for m in msgs] == ["aggregated_patterns"], q
        assert [p["key"] for p in msgs[0]["patterns"]] == ["python.fstring", "tests.pytest_fixture", "elixir.genserver"]
        assert msgs[0]["patterns"][0] == {"key": "python.fstring", "kind": "syntax", "instances": 2,
                                          "total_occurrences": 7, "confidence": float(f["confidence"]), "rank": 1,
                                          "packages": ["python"]}

    # Singularity's side folds its inbox into core.global_knowledge (when that module is present).
    with connect(owner_conninfo(s, "singularity")) as c:
        has_core = c.execute("SELECT to_regprocedure('core.run_job(text)') IS NOT NULL AS x").fetchone()["x"]
    if has_core:
        with connect(role_conninfo(s, "singularity", "svc_singularity")) as c:
            assert c.execute("SELECT core.run_job('consume_inbox') AS r").fetchone()["r"].startswith("ok")
            n = c.execute("SELECT count(*) AS n FROM core.global_knowledge WHERE key = 'python.fstring'"
                          " AND instances = 2 AND total_occurrences = 7").fetchone()["n"]
            assert n == 1
            # the fold committed; the next run acks the message in shared_queue
            assert c.execute("SELECT core.run_job('consume_inbox') AS r").fetchone()["r"].startswith("ok")

    for job in ("heartbeats", "statistics", "package-sync"):
        assert run_job(s, job).startswith("ok:"), job
    with connect(owner_conninfo(s, "centralcloud")) as c:
        st = c.execute("SELECT status FROM centralcloud.instance_status WHERE instance_id = %s", (INST,)).fetchone()
        assert st["status"] == "healthy"
        pk = {r["package"]: r for r in c.execute("SELECT * FROM centralcloud.packages").fetchall()}
        assert (pk["python"]["instances"], pk["python"]["occurrences"]) == (2, 7)
        assert c.execute("SELECT sum(messages) AS n FROM centralcloud.stats_latency WHERE bucket = 'day'"
                         " AND queue_name = 'pattern_messages'").fetchone()["n"] >= 2

    before = _snapshot(s)
    for job in ("aggregate", "pattern-sync", "heartbeats", "statistics", "package-sync"):
        assert run_job(s, job).startswith(("ok:", "skipped:")), job
    assert _snapshot(s) == before, "running every job a second time changed something"
    assert len(_inbox(s, f"knowledge_updates_{INST}")) == 1  # cc2 has no Singularity database here
    assert len(_inbox(s, "knowledge_updates")) == (0 if has_core else 1)


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


def _seed_patterns(s) -> None:
    with connect(owner_conninfo(s, "centralcloud")) as c:
        c.execute("""INSERT INTO centralcloud.patterns (key, kind, instances, total_occurrences, confidence, rank, packages)
                     VALUES ('python.fstring', 'syntax', 2, 7, 0.7, 1, '{python}'),
                            ('tests.fixture', 'practice', 1, 5, 0.9, 2, '{pytest}'),
                            ('py.walrus', 'syntax', 1, 1, 0.5, 3, '{}')""")


def test_knowledge_export_one_commit_on_branch(s, cc_clean, tmp_path, monkeypatch):
    repo = tmp_path / "learning"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("reviewed learning\n")
    (repo / "notes \u00e9 \"q\".md").write_text("a name git quotes\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    _seed_patterns(s)
    monkeypatch.setenv("CENTRALCLOUD_EXPORT_REPO", str(repo))
    monkeypatch.setenv("CENTRALCLOUD_PR_COMMAND", 'echo "opening PR for $CC_BRANCH"; echo https://example.invalid/pr/7')
    out = run_job(s, "knowledge-export")
    branch = f"learned-patterns-{_today()}"
    assert out.startswith(f"ok: 3 patterns in 5 files committed to {branch}"), out
    assert _git(repo, "rev-list", "--count", f"main..{branch}") == "1"
    files = sorted(_git(repo, "diff", "--name-only", f"main..{branch}").splitlines())
    assert files == [f"learned-patterns/{f}" for f in ("index.json", "practice.json", "practice.md", "syntax.json", "syntax.md")]
    syntax = json.loads(_git(repo, "show", f"{branch}:learned-patterns/syntax.json"))
    assert [p["key"] for p in syntax] == ["python.fstring", "py.walrus"]
    assert syntax[0]["total_occurrences"] == 7 and syntax[0]["instances"] == 2
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main" and _git(repo, "status", "--porcelain") == ""
    assert 'notes \u00e9 "q".md' in _git(repo, "ls-tree", "-z", "--name-only", branch).split("\0"), "other files kept"
    commit = _git(repo, "rev-parse", branch)
    msgs = [{k: m[k] for k in ("type", "branch", "artifacts_count", "commit", "pr_url")}
            for m in _inbox(s, "knowledge_updates") if m["type"] == "learning_exported"]
    assert msgs == [{"type": "learning_exported", "branch": branch, "artifacts_count": 3, "commit": commit,
                     "pr_url": "https://example.invalid/pr/7"}]

    again = run_job(s, "knowledge-export")
    assert again.startswith("skipped:"), again
    assert _git(repo, "rev-list", "--count", f"main..{branch}") == "1"
    assert len([m for m in _inbox(s, "knowledge_updates") if m["type"] == "learning_exported"]) == 1
    with connect(owner_conninfo(s, "centralcloud")) as c:
        ex = c.execute("SELECT branch, commit, artifacts_count, pushed, pr_url FROM centralcloud.exports").fetchall()
    assert ex == [{"branch": branch, "commit": commit, "artifacts_count": 3, "pushed": False,
                   "pr_url": "https://example.invalid/pr/7"}]


def test_knowledge_export_webhook_and_push(s, cc_clean, tmp_path, monkeypatch):
    """A URL repository is mirrored; push only when asked; the PR webhook is a real HTTP server."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"html_url": "http://pr.example/1"}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    _seed_patterns(s)
    monkeypatch.setenv("CENTRALCLOUD_EXPORT_REPO", f"file://{origin}")
    monkeypatch.setenv("CENTRALCLOUD_GIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CENTRALCLOUD_PR_WEBHOOK", f"http://127.0.0.1:{srv.server_port}/pulls")
    branch = f"learned-patterns-{_today()}"
    try:
        out = run_job(s, "knowledge-export")
        assert out.startswith("ok:") and "PR http://pr.example/1" in out and "pushed" not in out, out
        assert _git(origin, "branch", "--list") == "", "nothing is pushed unless configured"
        assert got[0]["branch"] == branch and got[0]["artifacts_count"] == 3
        with connect(owner_conninfo(s, "centralcloud")) as c:
            c.execute("UPDATE centralcloud.patterns SET total_occurrences = 8 WHERE key = 'python.fstring'")
        monkeypatch.setenv("CENTRALCLOUD_EXPORT_PUSH", "1")
        out = run_job(s, "knowledge-export")
        assert "and pushed" in out, out
        assert _git(origin, "rev-list", "--count", branch) == "2", "a changed ranking: one more commit, pushed"
    finally:
        srv.shutdown()


def test_template_distribution_exactly_changed_files(s, second_instance, cc_clean, tmp_path, monkeypatch):
    repo = tmp_path / "templates"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    for name, text in [("a.md", "A1"), ("b.md", "B1"), ("c/d.txt", "D1")]:
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "templates v1")
    monkeypatch.setenv("CENTRALCLOUD_TEMPLATES_REPO", str(repo))
    out = run_job(s, "template-distribution")
    assert out.startswith("ok: 3 changed and 0 deleted template file(s)"), out
    for q in ("template_updates", f"template_updates_{INST}"):
        (m,) = _inbox(s, q)
        assert m["type"] == "templates_updated" and m["git_url"] == str(repo)
        assert sorted(f["path"] for f in m["updated_files"]) == ["a.md", "b.md", "c/d.txt"]

    (repo / "a.md").write_text("A2")
    (repo / "c/d.txt").write_text("D2")
    _git(repo, "commit", "-qam", "two changed")
    head = _git(repo, "rev-parse", "HEAD")
    assert run_job(s, "template-distribution").startswith("ok: 2 changed")
    for q in ("template_updates", f"template_updates_{INST}"):
        m = _inbox(s, q)[-1]
        assert m["commit"] == head
        import hashlib
        assert {f["path"]: (f["content"], f["hash"]) for f in m["updated_files"]} == {
            "a.md": ("A2", hashlib.sha256(b"A2").hexdigest()), "c/d.txt": ("D2", hashlib.sha256(b"D2").hexdigest())}
    assert run_job(s, "template-distribution").startswith("skipped:")
    assert len(_inbox(s, "template_updates")) == 2
    with connect(owner_conninfo(s, "centralcloud")) as c:
        v = {r["path"]: (r["version"], r["commit"]) for r in c.execute("SELECT * FROM centralcloud.templates").fetchall()}
    assert v["a.md"] == (2, head) and v["c/d.txt"] == (2, head) and v["b.md"][0] == 1


def test_worker_schedule(s, cc_clean, monkeypatch):
    from orchestrator.centralcloud.worker import due_jobs, last_slot

    now = datetime(2026, 5, 3, 0, 30, tzinfo=UTC)
    assert last_slot(s, "knowledge-export", now) == datetime(2026, 5, 2, 1, 0, tzinfo=UTC)
    assert last_slot(s, "template-distribution", datetime(2026, 5, 3, 7, 59, tzinfo=UTC)) == datetime(2026, 5, 3, 4, 0, tzinfo=UTC)
    monkeypatch.delenv("CENTRALCLOUD_EXPORT_REPO", raising=False)
    monkeypatch.delenv("CENTRALCLOUD_TEMPLATES_REPO", raising=False)
    assert due_jobs(s) == []
    monkeypatch.setenv("CENTRALCLOUD_TEMPLATES_REPO", "/nonexistent")
    assert due_jobs(s) == ["template-distribution"]
    assert run_job(s, "template-distribution").startswith("failed:")  # a failed run counts as a run
    assert due_jobs(s) == []


@pytest.fixture(scope="module")
def real_instance(s):
    """A real second Singularity instance (own role, database, pg_cron jobs), removed afterwards."""
    sing = pytest.importorskip("orchestrator.infra.instances")
    sing.add_instance(s, "ccx")
    yield "ccx"
    sing.remove_instance(s, "ccx")
    _forget_heartbeats(s, "ccx")


def test_analysis_results_in_two_instances_reach_both_knowledge_bases(s, real_instance, cc_clean):
    """Singularity learns from analysis results in both instances -> pattern_messages (outbox, pg_cron-able)
    -> aggregated once here -> aggregated_patterns -> each instance's core.global_knowledge."""
    from orchestrator.infra import instances as sing
    from orchestrator.singularity.autonomous import run_job as run_instance_job

    tag = datetime.now(UTC).strftime("%H%M%S%f")
    k1, k2 = f"cc.e2e{tag}.fstring", f"cc.e2e{tag}.walrus"
    results = {"default": [[k1], [k1]], real_instance: [[k1, k2]]}
    for inst, rs in results.items():
        with sing.owner_conn(s, inst) as c:
            c.execute("INSERT INTO core.agents (id) VALUES ('cc-agent') ON CONFLICT DO NOTHING")
            for keys in rs:
                c.execute("INSERT INTO core.analysis_results (agent_id, result, confidence) VALUES ('cc-agent', %s, 0.8)",
                          (json.dumps({"patterns": [{"key": k, "kind": "syntax", "packages": ["python"]} for k in keys]}),))
        assert run_instance_job(s, "learn_patterns", inst).startswith("ok"), inst
        assert run_instance_job(s, "drain_outbox", inst).startswith("ok"), inst

    assert run_job(s, "aggregate").startswith("ok:")
    with connect(owner_conninfo(s, "centralcloud")) as c:
        got = {r["key"]: (r["instances"], r["total_occurrences"])
               for r in c.execute("SELECT * FROM centralcloud.patterns WHERE key IN (%s, %s)", (k1, k2)).fetchall()}
    assert got == {k1: (2, 3), k2: (1, 1)}
    assert run_job(s, "pattern-sync").startswith("ok:")
    for inst in results:
        assert run_instance_job(s, "consume_inbox", inst).startswith("ok"), inst
        with sing.owner_conn(s, inst) as c:
            gk = c.execute("SELECT instances, total_occurrences FROM core.global_knowledge WHERE key = %s", (k1,)).fetchone()
        assert (gk["instances"], gk["total_occurrences"]) == (2, 3), inst


def test_worker_tick_runs_a_due_export_once(s, cc_clean, tmp_path, monkeypatch):
    from orchestrator.centralcloud.worker import tick

    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _seed_patterns(s)
    monkeypatch.setenv("CENTRALCLOUD_EXPORT_REPO", str(repo))
    monkeypatch.delenv("CENTRALCLOUD_TEMPLATES_REPO", raising=False)
    tick(s)
    tick(s)
    with connect(owner_conninfo(s, "centralcloud")) as c:
        assert c.execute("SELECT count(*) AS n FROM centralcloud.exports").fetchone()["n"] == 1
        assert c.execute("SELECT count(*) AS n FROM centralcloud.job_runs WHERE job = 'knowledge-export'").fetchone()["n"] == 1


def test_centralcloud_cli(s, cc_clean, run_cli):
    r = run_cli("centralcloud", "run", "aggregate")
    assert r.returncode == 0 and r.stdout.startswith("ok:"), (r.stdout, r.stderr)
    bad = run_cli("centralcloud", "run", "nope")
    assert bad.returncode == 1 and "unknown job 'nope'" in bad.stdout
    unconfigured = run_cli("centralcloud", "run", "knowledge-export", env={"CENTRALCLOUD_EXPORT_REPO": ""})
    assert unconfigured.returncode == 1 and "set CENTRALCLOUD_EXPORT_REPO" in unconfigured.stdout
    for cmd in ("jobs", "patterns", "packages", "instances", "templates", "exports"):
        r = run_cli("centralcloud", cmd)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (cmd, r.stderr)
    assert "aggregate" in run_cli("centralcloud", "jobs").stdout
