"""Singularity with no daemon: concurrent assignment, outbox drain into shared_queue run as pg_cron
runs it (exactly once per id), pg_cron really running it, CDC, and the session-state canary."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid

import pytest
from psycopg.types.json import Jsonb

from orchestrator.infra.db import admin_conninfo, connect, owner_conninfo, role_conninfo

CORE = ("core.agents, core.tasks, core.tasks_archive, core.analysis_results, core.agent_sessions, core.agent_knowledge, "
        "core.learned_patterns, outbox.messages")


@pytest.fixture
def sing(s):
    """Superuser connection to `singularity`, emptied first (tables of this test only)."""
    with connect(admin_conninfo(s, "singularity")) as c:
        c.execute(f"TRUNCATE {CORE} CASCADE")
        yield c


def svc(s):
    return connect(role_conninfo(s, "singularity", "svc_singularity"))


def _assigned_by_cron(c, since) -> int:
    rows = c.execute("SELECT detail FROM core.job_runs WHERE job = 'assign_tasks' AND started_at >= %s", (since,)).fetchall()
    return sum(int(m.group(1)) for r in rows if (m := re.match(r"(\d+) tasks assigned", r["detail"] or "")))


def test_concurrent_assigners_never_double_assign(s, sing):
    sing.execute("INSERT INTO core.agents (id, capacity) SELECT 'ag' || g, 1 + g % 4 FROM generate_series(1, 60) g")
    sing.execute("INSERT INTO core.tasks (kind, priority) SELECT 'k', g % 7 FROM generate_series(1, 600) g")
    since = sing.execute("SELECT now() AS t").fetchone()["t"]
    counts: list[int] = []
    lock = threading.Lock()
    for _round in range(4):
        barrier = threading.Barrier(4)

        def assign(barrier: threading.Barrier = barrier) -> None:
            with svc(s) as c:
                barrier.wait()
                n = c.execute("SELECT core.assign_pending_tasks() AS n").fetchone()["n"]
            with lock:
                counts.append(n)

        threads = [threading.Thread(target=assign) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = sing.execute("""SELECT a.id, a.capacity, a.load, count(t.id) AS n FROM core.agents a
                                LEFT JOIN core.tasks t ON t.assigned_agent = a.id AND t.status IN ('assigned', 'running')
                               GROUP BY a.id HAVING count(t.id) > a.capacity OR count(t.id) <> a.load""").fetchall()
        assert not bad, f"capacity exceeded or load out of step: {bad}"
        # finish half of what is assigned so the next round has capacity again
        with svc(s) as c:
            for r in c.execute("SELECT id FROM core.tasks WHERE status = 'assigned' ORDER BY id LIMIT 90").fetchall():
                c.execute("SELECT core.finish_task(%s, %s)", (r["id"], Jsonb({"ok": True})))
    touched = sing.execute("SELECT count(*) AS n FROM core.tasks WHERE status <> 'pending'").fetchone()["n"]
    assert sum(counts) + _assigned_by_cron(sing, since) == touched, "a task was assigned twice"
    assert sum(counts) > 0


def _cron_command(s, job: str) -> tuple[str, str]:
    with connect(admin_conninfo(s, "postgres")) as pg:
        r = pg.execute("SELECT command, username, database FROM cron.job WHERE jobname = %s", (f"singularity:{job}",)).fetchone()
    assert r, f"pg_cron has no job singularity:{job}; run orchestrator migrate"
    # every job runs as the service role but the drain (a committing procedure), which runs as the owner
    assert r["database"] == "singularity"
    assert r["username"] == ("own_singularity" if job == "drain_outbox" else "svc_singularity")
    return r["command"], r["username"]


def _delivered(s, ids: list[str]) -> dict[str, int]:
    with connect(admin_conninfo(s, "shared_queue")) as c:
        rows = c.execute("""SELECT message->>'id' AS id, count(*) AS n FROM (
                                SELECT message FROM pgmq.q_instance_heartbeat UNION ALL
                                SELECT message FROM pgmq.a_instance_heartbeat) m
                             WHERE message->>'id' = ANY(%s) GROUP BY 1""", (ids,)).fetchall()
    return {r["id"]: r["n"] for r in rows}


def _enqueue_heartbeats(c, n: int, tag: str) -> list[str]:
    return [r["id"] for r in c.execute(
        """SELECT outbox.enqueue('instance_heartbeat', jsonb_build_object('type', 'heartbeat', 'instance_id', 'default',
               'service', 'singularity', 'at', core._iso(now()), 'stats', jsonb_build_object('tag', %s::text, 'n', g))) AS id
             FROM generate_series(1, %s) g""", (tag, n)).fetchall()]


def test_drain_as_pg_cron_runs_it_delivers_exactly_once(s, sing):
    ids = _enqueue_heartbeats(sing, 1200, uuid.uuid4().hex)
    command, user = _cron_command(s, "drain_outbox")
    assert command == "CALL outbox.drain_all()"

    def drain() -> None:
        with connect(role_conninfo(s, "singularity", user)) as c:  # the job's command, as its role, no daemon
            c.execute(command)

    for _tick in range(3):  # concurrent drains (and pg_cron's): one runs, the others skip; next tick retries
        threads = [threading.Thread(target=drain) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(_delivered(s, ids)) == len(ids):
            break
        time.sleep(0.5)
    got = _delivered(s, ids)
    assert len(got) == len(ids), f"{len(ids) - len(got)} messages not delivered"
    assert set(got.values()) == {1}, "a message id was delivered twice"
    left = sing.execute("SELECT count(*) AS n FROM outbox.messages WHERE id = ANY(%s)", (ids,)).fetchone()["n"]
    assert left == 0
    last = sing.execute("SELECT status FROM core.job_runs WHERE job = 'drain_outbox' ORDER BY id DESC LIMIT 1").fetchone()
    assert last["status"] == "ok"


def test_pg_cron_itself_runs_the_drain(s, sing, run_cli):
    """The schedule is really in pg_cron and pg_cron runs it (waits for the next minute tick at most)."""
    ids = _enqueue_heartbeats(sing, 5, uuid.uuid4().hex)
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        if len(_delivered(s, ids)) == len(ids):
            break
        time.sleep(1)
    assert len(_delivered(s, ids)) == len(ids), "pg_cron did not drain the outbox within a minute"
    with connect(admin_conninfo(s, "postgres")) as pg:
        r = pg.execute("""SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                           WHERE j.jobname = 'singularity:drain_outbox' ORDER BY d.start_time DESC LIMIT 1""").fetchone()
    assert r and r["status"] == "succeeded"
    out = run_cli("autonomous", "jobs-status", "--cron", check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("drain_outbox"))
    assert " ok " in line and "succeeded" in line


def test_cdc_returns_inserted_and_updated_rows(s, sing):
    with connect(owner_conninfo(s, "singularity")) as own:
        own.execute("SELECT cdc.skip()")
    agent = f"cdc-{uuid.uuid4().hex[:6]}"
    with svc(s) as c:
        c.execute("INSERT INTO core.agents (id, capacity) VALUES (%s, 1)", (agent,))
        c.execute("UPDATE core.agents SET capacity = 7 WHERE id = %s", (agent,))
        c.execute("INSERT INTO core.analysis_results (agent_id, result) VALUES (%s, %s)",
                  (agent, Jsonb({"patterns": [{"key": f"{agent}.k"}]})))
        c.execute("SELECT core.learn_patterns_from_analysis()")
        c.execute("INSERT INTO core.agent_sessions (agent_id, state) VALUES (%s, %s)", (agent, Jsonb({"cdc": "plain-cdc"})))
        changes = [r["change"] for r in c.execute("SELECT * FROM core.get_cdc_changes(false, 10000)").fetchall()]
        mine = [ch for ch in changes if ch["table"] == "agents"
                and any(col["name"] == "id" and col["value"] == agent for col in ch.get("columns", []))]
        assert [ch["action"] for ch in mine] == ["I", "U"]
        cap = {col["name"]: col["value"] for col in mine[1]["columns"]}["capacity"]
        assert cap == 7
        pats = [r["change"] for r in c.execute("SELECT * FROM core.get_pattern_changes()").fetchall()]
        assert pats and all(p["table"] == "learned_patterns" for p in pats)
        assert any({col["name"]: col["value"] for col in p["columns"]}["key"] == f"{agent}.k" for p in pats)
        sess = [r["change"] for r in c.execute("SELECT * FROM core.get_session_changes()").fetchall()]
        assert sess and "plain-cdc" not in str(sess), "CDC shows only the ciphertext of a session"
        # consuming empties the slot of these changes
        c.execute("SELECT count(*) FROM core.get_cdc_changes(true, 100000)")
        again = c.execute("SELECT count(*) AS n FROM core.get_cdc_changes(false, 100000) c WHERE c.change->>'table' = 'agents'"
                          ).fetchone()["n"]
        assert again == 0
    with connect(admin_conninfo(s, "singularity")) as a:
        lag = a.execute("SELECT * FROM cdc.lag()").fetchone()
    assert lag["wal_status"] in ("reserved", "extended")


def test_session_canary_not_in_table_dump_or_log(s, sing):
    if s.external:
        pytest.skip("needs the embedded cluster's server log")
    from orchestrator.infra.cluster import Cluster, bindir

    canary = f"canary-{uuid.uuid4().hex}"
    cl = Cluster(s)
    with connect(admin_conninfo(s, "postgres")) as pg:
        pg.execute("ALTER SYSTEM SET log_statement = 'all'")
        pg.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.3)
        start = cl.log_file.stat().st_size
        with svc(s) as c:
            c.execute("INSERT INTO core.agents (id) VALUES ('canary-agent')")
            c.execute("INSERT INTO core.agent_sessions (agent_id, state) VALUES (%s, %s)",
                      ("canary-agent", Jsonb({"note": canary})))
            c.execute("UPDATE core.agent_sessions SET state = %s WHERE agent_id = 'canary-agent'",
                      (Jsonb({"note": canary, "v": 2}),))
            c.execute("SELECT core.run_job('drain_outbox')")
        with connect(owner_conninfo(s, "singularity")) as own:
            assert own.execute("SELECT core.session_state(id) AS st FROM core.agent_sessions").fetchone()["st"]["note"] == canary
        time.sleep(0.5)
        with open(cl.log_file, errors="replace") as f:
            f.seek(start)
            log = f.read()
        assert "agent_sessions" in log, "log_statement = all did not log the insert (test would prove nothing)"
        assert canary not in log
    finally:
        with connect(admin_conninfo(s, "postgres")) as pg:
            pg.execute("ALTER SYSTEM RESET log_statement")
            pg.execute("SELECT pg_reload_conf()")
    table = sing.execute("SELECT string_agg(t::text, ' ') AS t FROM core.agent_sessions t").fetchone()["t"]
    assert canary not in table
    outbox = sing.execute("SELECT coalesce(string_agg(m::text, ' '), '') AS t FROM outbox.messages m").fetchone()["t"]
    assert canary not in outbox
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(admin_conninfo(s, "singularity"))
    dump = subprocess.run([str(bindir() / "pg_dump"), "-h", d["host"], "-p", str(d["port"]), "-U", d["user"],
                           "-d", "singularity", "--data-only", "-n", "core", "-n", "outbox"],
                          capture_output=True, text=True, timeout=60, env={"PGPASSWORD": d.get("password", "")})
    assert dump.returncode == 0, dump.stderr
    assert "canary-agent" in dump.stdout and canary not in dump.stdout


def test_cdc_lag_is_reported_and_a_lost_slot_comes_back(s, sing, run_cli):
    """doctor shows each CDC slot's lag and wal_status; a missing/lost slot errors with the fix; migrate recreates it."""
    from orchestrator.infra.migrate import Target, migrate

    with svc(s) as c:
        c.execute("INSERT INTO core.agents (id) VALUES ('lag-agent')")
        lag = c.execute("SELECT * FROM cdc.lag()").fetchone()
    assert lag["slot_name"] == "cdc_singularity" and lag["behind_bytes"] > 0
    out = run_cli("doctor").stdout
    line = next(x for x in out.splitlines() if "CDC slot cdc_singularity" in x)
    assert "ok" in line and "behind, wal_status" in line
    with connect(admin_conninfo(s, "postgres")) as pg:  # what a slot that fell past max_slot_wal_keep_size amounts to
        pg.execute("SELECT pg_drop_replication_slot('cdc_singularity')")
    try:
        with svc(s) as c, pytest.raises(Exception, match="missing or lost") as e:
            c.execute("SELECT * FROM core.get_cdc_changes()")
        assert e.value.sqlstate == "55000" and "orchestrator migrate" in (e.value.diag.message_hint or "")
    finally:
        migrate(s, progress=lambda _m: None, only=[Target("singularity", "singularity")])
    with svc(s) as c:
        c.execute("SELECT * FROM core.get_cdc_changes()")
