"""Retention: bus.prune_archives() deletes archive rows older than retention_days once their day is in
cold storage (test_cold_storage.py), in committed batches, never touches live queues, and records what
it removed in bus.prune_log.

Not a pgTAP test: the procedure COMMITs per batch, which cannot happen inside pgTAP's transaction.
It runs here exactly as pg_cron runs it: the command of the cron job, as the job's role, in its database.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from orchestrator.infra.cold_storage import ColdStorage
from orchestrator.infra.db import connect, role_conninfo

JOB = "shared_queue:prune_archives"
IDS = range(-900_020, -900_000)  # archive msg_ids no real message has (real ids come from a sequence)


@pytest.fixture
def sq(admin):
    """Superuser connection to shared_queue; removes this test's rows afterwards."""
    c = admin("shared_queue")
    yield c
    for q in ("job_results", "llm_requests"):
        c.execute(f"DELETE FROM pgmq.a_{q} WHERE msg_id = ANY(%s)", (list(IDS),))
    c.execute("DELETE FROM bus.cold_exports WHERE first_msg_id = ANY(%s)", (list(IDS),))
    c.execute("DELETE FROM pgmq.q_job_results WHERE message->>'request_id' = 'retention-test-live'")


@pytest.fixture
def cron_job(admin) -> dict:
    row = admin("postgres").execute("SELECT command, database, username FROM cron.job WHERE jobname = %s", (JOB,)).fetchone()
    assert row, f"pg_cron job {JOB} missing: run `orchestrator migrate`"
    return row


def _archive(c, queue: str, msg_id: int, age: str) -> None:
    c.execute(f"""INSERT INTO pgmq.a_{queue} (msg_id, read_ct, enqueued_at, archived_at, vt, message)
                  VALUES (%s, 1, now() - %s::interval, now() - %s::interval, now(), %s::jsonb)""",
              (msg_id, age, age, '{"type": "retention-test"}'))


def _export(s, tmp_path) -> None:
    """Every day past retention to cold storage (verified), without pruning: the cron job prunes."""
    with ColdStorage(dataclasses.replace(s, cold_storage_dir=tmp_path)) as cs:
        out = cs.export(prune=False)
    assert all(r["result"].startswith("ok") for r in out), out


def _run_as_cron(s, job: dict, command: str | None = None) -> None:
    with connect(role_conninfo(s, job["database"], job["username"])) as c:  # autocommit, like pg_cron
        c.execute(command or job["command"])


def _exists(c, queue: str, msg_id: int) -> bool:
    return c.execute(f"SELECT EXISTS (SELECT 1 FROM pgmq.a_{queue} WHERE msg_id = %s) AS x", (msg_id,)).fetchone()["x"]


def test_prune_deletes_only_old_archive_rows(s, sq, cron_job, tmp_path):
    days = int(sq.execute("SELECT bus.setting('retention_days') AS d").fetchone()["d"])
    ids = iter(IDS)
    old_jr = [next(ids) for _ in range(5)]
    old_llm = [next(ids) for _ in range(2)]
    new_jr, edge_jr, new_llm = next(ids), next(ids), next(ids)
    for i in old_jr:
        _archive(sq, "job_results", i, f"{days + 1} days")
    for i in old_llm:
        _archive(sq, "llm_requests", i, f"{days + 30} days")
    _archive(sq, "job_results", new_jr, "1 day")
    _archive(sq, "job_results", edge_jr, f"{days} days -1 hour")  # just inside the window: kept
    _archive(sq, "llm_requests", new_llm, "2 hours")
    # A live, never consumed message far older than the retention window.
    live = sq.execute("SELECT pgmq.send('job_results', %s::jsonb) AS id",
                      ('{"request_id": "retention-test-live"}',)).fetchone()["id"]
    sq.execute("UPDATE pgmq.q_job_results SET enqueued_at = now() - interval '400 days' WHERE msg_id = %s", (live,))
    expect = {q: sq.execute(f"SELECT count(*) AS n FROM pgmq.a_{q} "
                            "WHERE archived_at < (bus.cold_cutoff()::timestamp AT TIME ZONE 'UTC')").fetchone()["n"]
              for q in ("job_results", "llm_requests")}
    assert expect["job_results"] >= 5 and expect["llm_requests"] >= 2
    started = sq.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    _run_as_cron(s, cron_job)
    assert all(_exists(sq, "job_results", i) for i in old_jr), "nothing is pruned before its day is in cold storage"
    _export(s, tmp_path)

    _run_as_cron(s, cron_job)

    assert not any(_exists(sq, "job_results", i) for i in old_jr), "old job_results archive rows must be pruned"
    assert not any(_exists(sq, "llm_requests", i) for i in old_llm), "old llm_requests archive rows must be pruned"
    assert _exists(sq, "job_results", new_jr) and _exists(sq, "job_results", edge_jr), "rows inside the window are kept"
    assert _exists(sq, "llm_requests", new_llm), "rows inside the window are kept"
    assert sq.execute("SELECT count(*) AS n FROM pgmq.q_job_results WHERE msg_id = %s", (live,)).fetchone()["n"] == 1, \
        "a live message is never pruned, however old"
    log = sq.execute("SELECT queue_name, sum(deleted) AS deleted, max(cutoff) AS cutoff FROM bus.prune_log "
                     "WHERE ran_at >= %s GROUP BY 1", (started,)).fetchall()
    log = {r["queue_name"]: r for r in log}
    assert log["job_results"]["deleted"] == expect["job_results"]
    assert log["llm_requests"]["deleted"] == expect["llm_requests"]
    cutoff_age = sq.execute("SELECT now() - %s::timestamptz AS a", (log["job_results"]["cutoff"],)).fetchone()["a"]
    assert days * 86400 <= cutoff_age.total_seconds() < (days + 1) * 86400, \
        "the last day pruned ends before now() - retention_days (whole UTC days go to cold storage)"
    assert all(r["deleted"] > 0 for r in log.values()), "queues with nothing to prune get no log row"


def test_prune_works_in_batches_and_respects_the_batch_budget(s, sq, cron_job, tmp_path):
    days = int(sq.execute("SELECT bus.setting('retention_days') AS d").fetchone()["d"])
    _run_as_cron(s, cron_job)  # start with no exported day left to prune
    ids = list(IDS)[:5]
    for i in ids:
        _archive(sq, "job_results", i, f"{days + 2} days")
    _export(s, tmp_path)
    # 2 batches of 2 rows: 4 of 5 go.
    _run_as_cron(s, cron_job, "CALL bus.prune_archives(2, 2)")
    left = [i for i in ids if _exists(sq, "job_results", i)]
    assert len(left) == 1, f"the batch budget stops after 2 batches of 2 (left: {left})"
    _run_as_cron(s, cron_job, "CALL bus.prune_archives(2)")
    assert not any(_exists(sq, "job_results", i) for i in ids), "the next run finishes the job"


def test_prune_cannot_run_inside_a_transaction_block_but_runs_standalone(s, sq, cron_job, tmp_path):
    """The procedure commits per batch: fine as a top-level CALL (how pg_cron runs it), refused inside BEGIN."""
    days = int(sq.execute("SELECT bus.setting('retention_days') AS d").fetchone()["d"])
    _archive(sq, "job_results", IDS[0], f"{days + 3} days")
    _export(s, tmp_path)  # a verified day to delete, so that it gets to its first COMMIT
    with connect(role_conninfo(s, cron_job["database"], cron_job["username"]), autocommit=False) as c:
        c.execute("SELECT 1")  # psycopg opens a transaction block
        with pytest.raises(psycopg.errors.InvalidTransactionTermination):
            c.execute(cron_job["command"])
        c.rollback()


def test_service_roles_cannot_prune(s):
    for role in ("svc_singularity", "svc_genesis", "svc_nexus", "svc_centralcloud"):
        with connect(role_conninfo(s, "shared_queue", role)) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("CALL bus.prune_archives()")
