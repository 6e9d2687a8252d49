"""Cold storage (issue 13, seed 001 phase 3): archive rows past retention are exported to verified files
before retention deletes them, and restore makes a day queryable again. Nothing is lost and nothing
doubled: through a normal pass, a crash before the catalog knew of a file, a prune stopped half way, rows
that changed after their export, and damaged or missing files (refused with the reason).

Real files in a temporary SHARED_QUEUE_COLD_STORAGE_DIR, the real procedures, run as pg_cron runs them.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from datetime import UTC, date, datetime, time, timedelta

import pytest

from helpers import cron_job_paused, run_cli
from orchestrator.centralcloud.jobs import connect_cc
from orchestrator.centralcloud.stats import refresh_days
from orchestrator.core.archive import export_once
from orchestrator.infra.cold_storage import ColdFileError, ColdStorage, DayFile
from orchestrator.infra.db import connect, role_conninfo

IDS = -700_000  # archive msg_ids no real message has (real ids come from a sequence)
QUEUES = ("job_results", "llm_results")


@pytest.fixture
def cold(s, tmp_path, admin):
    """Settings with a fresh cold storage folder; the days this test used are cleaned up afterwards."""
    sq = admin("shared_queue")
    cs = dataclasses.replace(s, cold_storage_dir=tmp_path / "cold")
    with cron_job_paused(s, "shared_queue:prune_archives"):
        yield cs
    for q in QUEUES:
        sq.execute(f"DELETE FROM pgmq.a_{q} WHERE msg_id BETWEEN %s AND %s", (IDS - 10_000, IDS))
    days = [r["day"] for r in sq.execute("SELECT DISTINCT day FROM bus.restored_archive WHERE msg_id BETWEEN %s AND %s",
                                         (IDS - 10_000, IDS)).fetchall()]
    sq.execute("DELETE FROM bus.restored_archive WHERE msg_id BETWEEN %s AND %s", (IDS - 10_000, IDS))
    sq.execute("DELETE FROM bus.cold_exports WHERE first_msg_id BETWEEN %s AND %s", (IDS - 10_000, IDS))
    with connect_cc(s) as c:
        for d in days:
            refresh_days(c, d, d)


@pytest.fixture
def sq(admin):
    return admin("shared_queue")


def _cutoff(sq) -> date:
    return sq.execute("SELECT bus.cold_cutoff() AS d").fetchone()["d"]


def _archive(sq, queue: str, day: date, n: int, start: int, message=None) -> list[int]:
    """N archive rows of QUEUE on UTC DAY with msg_ids counting down from START; returns the ids."""
    t0 = datetime.combine(day, time(), UTC)
    ids = [start - i for i in range(n)]
    for i, msg_id in enumerate(ids):
        body = message(i) if message else {"type": "job_result", "request_id": f"cold-{msg_id}", "output": f"é✓ {i}\n\t\"q\"",
                                           "nested": {"a": [1, 2.5, None, True]}}
        sq.execute(f"""INSERT INTO pgmq.a_{queue} (msg_id, read_ct, enqueued_at, archived_at, vt, message, headers)
                       VALUES (%s, 1, %s, %s, %s, %s::jsonb, %s::jsonb)""",
                   (msg_id, t0 + timedelta(seconds=i), t0 + timedelta(seconds=i, milliseconds=7), t0,
                    json.dumps(body), json.dumps({"sender": "svc_genesis"})))
    return ids


def _live(sq, queue: str, ids: list[int]) -> list[dict]:
    return sq.execute(f"SELECT msg_id, read_ct, enqueued_at, archived_at, message FROM pgmq.a_{queue} "
                      "WHERE msg_id = ANY(%s) ORDER BY msg_id", (ids,)).fetchall()


def _seen(sq, queue: str, ids: list[int]) -> list[dict]:
    """The rows analytics sees (bus.archived_messages: live archives plus restored days)."""
    return sq.execute("SELECT msg_id, read_ct, enqueued_at, archived_at, message FROM bus.archived_messages "
                      "WHERE queue_name = %s AND msg_id = ANY(%s) ORDER BY msg_id", (queue, ids)).fetchall()


def _prune_as_cron(s) -> None:
    """bus.prune_archives as pg_cron runs it: its command, as own_shared_queue, autocommit."""
    with connect(role_conninfo(s, "shared_queue", "own_shared_queue")) as c:
        c.execute("CALL bus.prune_archives()")


def _state(sq, queue: str, day: date) -> dict | None:
    return sq.execute("SELECT * FROM bus.cold_catalog() WHERE queue_name = %s AND day = %s", (queue, day)).fetchone()


def test_export_prune_restore_loses_nothing_and_doubles_nothing(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=3)
    ids = _archive(sq, "job_results", day, 250, IDS)
    before = _live(sq, "job_results", ids)

    out = export_once(cold)  # the daemon's hourly pass: export, then retention deletes what is verified

    assert any(r["queue"] == "job_results" and r["day"] == day and r["result"].startswith("ok: 250 rows")
               for r in out), out
    df = DayFile(cold.cold_dir, "job_results", day)
    manifest = json.loads(df.manifest.read_text())
    assert manifest["rows"] == 250 and manifest["first_msg_id"] == min(ids) and manifest["last_msg_id"] == max(ids)
    with gzip.open(df.data, "rt") as f:
        assert sum(1 for _ in f) == 250, "one line per archive row"
    assert _live(sq, "job_results", ids) == [], "exported and verified: retention deleted the day"
    assert _state(sq, "job_results", day)["state"] == "pruned"

    with ColdStorage(cold) as c:
        assert c.restore("job_results", day) == 250
        assert c.restore("job_results", day) == 0, "restoring twice adds nothing"
    assert _seen(sq, "job_results", ids) == before, "restored rows are the archived rows, byte for byte"
    assert _state(sq, "job_results", day)["restored_rows"] == 250

    with ColdStorage(cold) as c:
        assert c.unrestore("job_results", day) == 250
    assert _seen(sq, "job_results", ids) == []


def test_nothing_is_deleted_before_its_export_and_an_alert_says_so(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=4)
    ids = _archive(sq, "job_results", day, 20, IDS - 1000)
    _prune_as_cron(s)
    assert len(_live(sq, "job_results", ids)) == 20, "past retention, but not exported: kept"
    alerts = sq.execute("SELECT * FROM bus.alerts() WHERE subject = 'cold storage'").fetchall()
    assert alerts and "job_results" in alerts[0]["message"] and "orchestrator archive export" in alerts[0]["fix"]
    assert _state(sq, "job_results", day)["state"] == "waiting"


def test_a_crash_before_the_catalog_knew_of_the_file(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=5)
    ids = _archive(sq, "job_results", day, 40, IDS - 2000)
    before = _live(sq, "job_results", ids)
    with ColdStorage(cold) as c:
        c.write_day("job_results", day)  # the file is written and durable; the process dies before bus.cold_record
    _prune_as_cron(s)
    assert _live(sq, "job_results", ids) == before, "a file the catalog does not know deletes nothing"

    export_once(cold)  # the next pass writes the day again, records and prunes it
    assert _live(sq, "job_results", ids) == []
    with ColdStorage(cold) as c:
        assert c.restore("job_results", day) == 40
    assert _seen(sq, "job_results", ids) == before


def test_a_prune_stopped_half_way_finishes_without_losing_or_doubling(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=6)
    ids = _archive(sq, "job_results", day, 100, IDS - 3000)
    before = _live(sq, "job_results", ids)
    with ColdStorage(cold) as c:
        assert c.export_day("job_results", day)["result"].startswith("ok: 100 rows")
    with connect(role_conninfo(s, "shared_queue", "own_shared_queue")) as c:
        c.execute("CALL bus.prune_archives(10, 3)")  # stops after 3 committed batches, as a crash between them would
    left = _live(sq, "job_results", ids)
    assert len(left) == 70 and _state(sq, "job_results", day)["state"] == "pruning"

    # rows of the day that are half deleted are never exported again (the file is the only full copy)
    with ColdStorage(cold) as c:
        assert not [p for p in c.pending() if p["queue_name"] == "job_results" and p["day"] == day]
        c.restore("job_results", day)
    assert _seen(sq, "job_results", ids) == before, "while half pruned: live rows plus restored rows, none twice"

    _prune_as_cron(s)
    assert _live(sq, "job_results", ids) == [] and _state(sq, "job_results", day)["state"] == "pruned"
    assert _seen(sq, "job_results", ids) == before


def test_rows_that_changed_after_their_export_wait_for_a_new_one(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=7)
    ids = _archive(sq, "job_results", day, 10, IDS - 4000)
    with ColdStorage(cold) as c:
        c.export_day("job_results", day)
    ids += _archive(sq, "job_results", day, 1, IDS - 4100)  # a row the file does not hold
    _prune_as_cron(s)
    assert len(_live(sq, "job_results", ids)) == 11, "the file no longer holds every row: nothing deleted"
    st = _state(sq, "job_results", day)
    assert st["state"] == "unverified" and "export it again" in st["note"]
    assert sq.execute("SELECT count(*) AS n FROM bus.alerts() WHERE subject = %s",
                      (f"cold storage: job_results {day}",)).fetchone()["n"] == 1

    before = _live(sq, "job_results", ids)
    export_once(cold)
    assert _live(sq, "job_results", ids) == []
    with ColdStorage(cold) as c:
        assert c.restore("job_results", day) == 11
    assert _seen(sq, "job_results", ids) == before


def test_a_damaged_or_missing_file_is_refused_with_the_reason(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=8)
    ids = _archive(sq, "job_results", day, 30, IDS - 5000)
    with ColdStorage(cold) as c:
        c.export_day("job_results", day)
    df = DayFile(cold.cold_dir, "job_results", day)
    good = df.data.read_bytes()

    df.data.write_bytes(good[:-40] + bytes(b ^ 0xFF for b in good[-40:]))  # bit rot at the end
    with ColdStorage(cold) as c:
        res = [r for r in c.verify() if r["day"] == day]
        assert not res[0]["ok"] and "damaged" in res[0]["result"] and "backup" in res[0]["result"]
        with pytest.raises(ColdFileError, match="damaged"):
            c.restore("job_results", day)
    st = _state(sq, "job_results", day)
    assert st["state"] == "unverified", "a damaged file's day is not pruned"
    _prune_as_cron(s)
    assert len(_live(sq, "job_results", ids)) == 30

    # a file rewritten with other rows and a manifest to match: the catalog still knows the truth
    other = gzip.compress(b'{"msg_id": 1, "message": {}}\n', mtime=0)
    df.data.write_bytes(other)
    m = json.loads(df.manifest.read_text())
    m.update(file_sha256=hashlib.sha256(other).hexdigest(), bytes=len(other))
    df.manifest.write_text(json.dumps(m))
    with ColdStorage(cold) as c, pytest.raises(ColdFileError, match="catalog"):
        c.restore("job_results", day)

    df.data.unlink()
    r = run_cli("archive", "restore", "job_results", day.isoformat(),
                env={"SHARED_QUEUE_COLD_STORAGE_DIR": str(cold.cold_dir)})
    assert r.returncode == 1 and "is missing" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _seen(sq, "job_results", ids) == _live(sq, "job_results", ids), "nothing restored from a bad file"

    df.data.write_bytes(good)  # the backup copy: verified again, exported days prune as before
    export_once(cold)
    assert _live(sq, "job_results", ids) == []


def test_the_cli_and_stats_read_a_restored_day(s, cold, sq):
    day = _cutoff(sq) - timedelta(days=9)
    ids = _archive(sq, "llm_results", day, 12, IDS - 6000, message=lambda i: {
        "type": "llm_result", "request_id": f"cold-llm-{i}", "model": "cold-model", "content": "x",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.25}})
    env = {"SHARED_QUEUE_COLD_STORAGE_DIR": str(cold.cold_dir)}
    r = run_cli("archive", "export", env=env)
    assert r.returncode == 0 and f"llm_results {day}: ok: 12 rows" in r.stdout, r.stdout + r.stderr
    r = run_cli("archive", "list", env=env)
    assert r.returncode == 0 and "pruned" in r.stdout and f"llm_results/{day:%Y}/{day}.jsonl.gz" in r.stdout
    with connect_cc(s) as c:
        refresh_days(c, day, day)  # stats of that day as if the statistics job ran after the prune
        assert c.execute("SELECT count(*) AS n FROM centralcloud.stats_llm WHERE day = %s AND model = 'cold-model'",
                         (day,)).fetchone()["n"] == 0

    r = run_cli("archive", "restore", "llm_results", day.isoformat(), env=env)
    assert r.returncode == 0 and "12 rows restored" in r.stdout, r.stdout + r.stderr
    with connect_cc(s) as c:
        row = c.execute("SELECT calls, prompt_tokens, completion_tokens, cost FROM centralcloud.stats_llm "
                        "WHERE day = %s AND model = 'cold-model'", (day,)).fetchone()
    assert row == {"calls": 12, "prompt_tokens": 120, "completion_tokens": 60, "cost": 3}, row
    r = run_cli("stats", "--no-refresh", "--days", str((date.today() - day).days + 2), env=env)
    assert r.returncode == 0 and "cold-model" in r.stdout, r.stdout
    r = run_cli("archive", "verify", env=env)
    assert r.returncode == 0 and f"llm_results {day}: ok: 12 rows" in r.stdout
    assert len(_seen(sq, "llm_results", ids)) == 12
