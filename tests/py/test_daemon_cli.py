"""The daemon (supervisor, heartbeat, SIGTERM), retention, and the CLI's answers to bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from helpers import ROOT, run_cli, wait_until
from orchestrator.core.bus import Bus
from orchestrator.core.supervisor import Supervisor, Worker
from orchestrator.infra.db import role_conninfo

LLM = {"agent_id": "agent-1", "task_type": "chat", "messages": [{"role": "user", "content": "hi"}]}


def test_daemon_heartbeats_and_stops_cleanly_on_sigterm(s, clean_queues, sq_owner):
    env = {**os.environ, "ORCHESTRATOR_HEARTBEAT_S": "1"}
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--log-json", "daemon", "--only", "heartbeat"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        n = 0
        while time.monotonic() < deadline and n < 2:
            n = sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_instance_heartbeat").fetchone()["n"]
            time.sleep(0.2)
        assert n >= 2, "no heartbeats published"
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("shutdown requested" in r["msg"] for r in logs) and any("daemon stopped" in r["msg"] for r in logs)
    [hb] = sq_owner.execute("SELECT message FROM pgmq.q_instance_heartbeat LIMIT 1").fetchall()
    assert hb["message"]["service"] == "singularity" and hb["message"]["instance_id"] == "default"


def test_daemon_survives_failing_handler_and_keeps_draining(s, clean_queues, sq_owner):
    """One poison message is retried and dead-lettered; the others are processed; nobody crashes."""
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"))
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"), poll_ms=100)
    seen: list[str] = []

    def handle(m):
        if m.body["agent_id"] == "poison":
            raise ValueError("cannot route this")
        seen.append(m.body["agent_id"])

    w = Worker(name="test", bus=nexus, concurrency=2, queue="llm_requests", handle=handle)
    sup = Supervisor([w], grace_s=5)
    sup.start()
    try:
        sender.publish("llm_requests", {**LLM, "agent_id": "poison"})
        for i in range(10):
            sender.publish("llm_requests", {**LLM, "agent_id": f"a{i}"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # speed the poison message's backoff up so the test sees it dead-lettered
            sq_owner.execute("UPDATE pgmq.q_llm_requests SET vt = now() WHERE vt > now() AND read_ct > 0 "
                             "AND headers ? 'last_error'")
            dl = sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_dead_letters").fetchone()["n"]
            if dl and len(seen) == 10:
                break
            time.sleep(0.2)
        assert sorted(seen) == sorted(f"a{i}" for i in range(10))
        [d] = sq_owner.execute("SELECT message FROM pgmq.q_dead_letters").fetchall()
        assert "cannot route this" in d["message"]["error"] and d["message"]["attempts"] == 5
        assert all(t.is_alive() for t in sup.threads)
    finally:
        sup.request_stop()
        assert sup.shutdown() == 0
        sender.close()
        nexus.close()


def test_shutdown_releases_in_flight_work(s, clean_queues, sq_owner):
    """Work that cannot finish within the grace period is released for immediate redelivery."""
    sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"))
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"), poll_ms=100, vt_s=300)
    started, finished = threading.Event(), threading.Event()

    def slow(m):
        started.set()
        try:
            time.sleep(3)
            raise RuntimeError("interrupted")
        finally:
            finished.set()

    sup = Supervisor([Worker(name="slow", bus=nexus, queue="llm_requests", handle=slow)], grace_s=0.5)
    sup.start()
    try:
        sender.publish("llm_requests", LLM)
        assert started.wait(10)
        sup.request_stop()
        sup.shutdown()
        row = sq_owner.execute("SELECT vt <= now() AS visible FROM pgmq.q_llm_requests").fetchone()
        assert row["visible"], "in-flight message was not released"
    finally:
        sender.close()
        finished.wait(10)  # the handler's thread still holds a connection of nexus's pool
        nexus.close()


def test_cli_send_read_queues_and_dlq(s, clean_queues, sq_owner):
    r = run_cli("send", "llm_requests", json.dumps(LLM), check=True)
    assert "sent msg_id" in r.stdout
    assert '"agent_id": "agent-1"' in run_cli("read", "llm_requests", check=True).stdout
    q = run_cli("queues", check=True).stdout
    assert "llm_requests" in q and "dead_letters" in q and "oldest_age_s" in q
    nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"))
    [m] = nexus.read("llm_requests")
    nexus.dead_letter(m, "bad model")
    nexus.close()
    listing = run_cli("dlq", "list", check=True).stdout
    assert "llm_requests" in listing and "bad model" in listing
    dlq_id = sq_owner.execute("SELECT msg_id FROM pgmq.q_dead_letters").fetchone()["msg_id"]
    assert "replayed as msg_id" in run_cli("dlq", "replay", str(dlq_id), check=True).stdout
    assert sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests").fetchone()["n"] == 1
    assert "0 dead letters archived" in run_cli("dlq", "purge", "--yes", check=True).stdout  # replay emptied it
    st = run_cli("status", check=True).stdout
    assert "migrations up to date" in st and "shared_queue:prune_archives" in st


def test_cli_bad_input_gets_clear_errors(s, clean_queues, sq_owner):
    cases = [
        (["send", "llm_requests", "{not json"], "is not valid JSON"),
        (["send", "no_such_queue", "{}"], 'unknown queue "no_such_queue"'),
        (["send", "llm_requests; DROP TABLE x", "{}"], "unknown queue"),
        (["send", "llm_requests", "{}"], 'required field "agent_id" is missing'),
        (["send", "llm_requests", "-"], "over the limit"),
        (["send", "llm_requests", json.dumps(LLM), "--role", "svc_genesis"], "permission denied"),
        (["daemon", "--only", "nope"], "unknown worker"),
        (["dlq", "replay"], "name the dead letters"),
    ]
    for args, words in cases:
        r = run_cli(*args, input=json.dumps({**LLM, "x": "y" * 1_100_000}) if "-" in args else None)
        assert r.returncode != 0, args
        assert words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert sq_owner.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests").fetchone()["n"] == 0


def test_every_option_is_an_env_var(s):
    r = run_cli("read", "llm_requests", env={"ORCHESTRATOR_READ_LIMIT": "notanumber"})
    assert r.returncode != 0 and "LIMIT" in r.stderr.upper()


def test_a_worker_setting_out_of_range_stops_the_daemon_with_the_fix(s):
    r = run_cli("daemon", "--only", "nexus", env={"NEXUS_LEASE_MARGIN_S": "0"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "NEXUS_LEASE_MARGIN_S='0': give seconds between 1 and 3600" in r.stderr


def test_alerts_name_the_problem_and_the_fix(s, clean_queues, sq_owner, admin):
    a = admin("shared_queue")
    pg = admin("postgres")
    # Earlier tests leave rightly-raised alerts behind: heartbeats of daemons they stopped are "late",
    # and a schedule running when a chaos test crashed the server is marked failed ("server restarted")
    # until its next run, an hour later for hourly jobs. Start from none of either.
    a.execute("DELETE FROM pgmq.a_instance_heartbeat")
    pg.execute("DELETE FROM cron.job_run_details WHERE status = 'failed'")
    r = run_cli("alerts")
    assert r.returncode == 0, r.stdout
    old_settings = {r["key"]: r["value"] for r in a.execute("SELECT key, value FROM bus.settings")}
    try:
        a.execute("SELECT bus.set_setting('alert_oldest_s', '1'), bus.set_setting('alert_heartbeat_late_s', '1')")
        sender = Bus(role_conninfo(s, "shared_queue", "svc_singularity"))
        sender.publish("llm_requests", LLM)
        from orchestrator.core.heartbeat import beat

        with Bus(role_conninfo(s, "shared_queue", "svc_genesis")) as g:
            beat(g, "default", "genesis")
        nexus = Bus(role_conninfo(s, "shared_queue", "svc_nexus"))
        sender.publish("llm_requests", LLM)
        nexus.dead_letter(nexus.read("llm_requests", 1)[0], "poison")
        # a schedule whose last run failed, as pg_cron records it (1.4 has no sub-minute schedules to wait for;
        # a daily job, so that no real run lands in between)
        pg.execute("""INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,
                                                        return_message, start_time, end_time)
                      SELECT jobid, nextval('cron.runid_seq'), 0, database, username, command, 'failed',
                             'ERROR:  canceling statement due to statement timeout', now(), now()
                        FROM cron.job WHERE jobname = 'postgres:prune_cron_history'
                      UNION ALL
                      SELECT jobid, nextval('cron.runid_seq'), 0, database, username, command, 'failed',
                             'server restarted', now(), now()
                        FROM cron.job WHERE jobname = 'centralcloud:package_sync'""")
        # the message and the heartbeat get older than the 1 s thresholds
        wait_until(lambda: {"llm_requests", "genesis:default"} <= {r["subject"] for r in a.execute(
            "SELECT subject FROM bus.alerts()")}, 15, "the waiting-message and late-heartbeat alerts")
        r = run_cli("alerts")
        assert r.returncode == 1
        assert 'postgres:prune_cron_history: last run failed: ERROR:  canceling statement due to statement timeout' in r.stdout
        assert "fix its SQL or its database" in r.stdout
        assert "centralcloud:package_sync: last run failed: server restarted" in r.stdout
        assert ("nothing is wrong with the job: the server restarted while it ran; it runs again on schedule, "
                "or now: orchestrator centralcloud run package-sync") in r.stdout
        # the same alerts reach svc_nexus (dashboard, /metrics, the alert pusher) through bus.dashboard_alerts()
        with Bus(role_conninfo(s, "shared_queue", "svc_nexus")) as nx:
            subjects = {x["subject"] for x in nx.run(lambda c: c.execute("SELECT * FROM bus.dashboard_alerts()")
                                                        .fetchall())}
        assert {"postgres:prune_cron_history", "centralcloud:package_sync"} <= subjects
        assert "llm_requests: oldest message has waited" in r.stdout
        assert "dead_letters: 1 dead letters from llm_requests" in r.stdout and "dlq replay" in r.stdout
        assert "genesis:default: no heartbeat for" in r.stdout
        sender.close()
        nexus.close()
    finally:
        pg.execute("DELETE FROM cron.job_run_details WHERE status = 'failed'")
        pg.execute("SELECT ops.report_schedules()")
        a.execute("DELETE FROM bus.settings WHERE key LIKE 'alert%'")
        for k, v in old_settings.items():
            a.execute("SELECT bus.set_setting(%s, %s)", (k, v))
