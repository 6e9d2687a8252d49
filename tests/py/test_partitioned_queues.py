"""Partitioned queues: a kind with bus.queue_kinds.partition_interval gets pgmq.create_partitioned queues
(pg_partman, by enqueued_at / archived_at, whole UTC days), and retention drops whole archive partitions,
but only once every day in them is exported to cold storage and verified (docs/cold-storage.md).

Run as pg_cron runs the job (its command, as its role, in its database): the procedure COMMITs.
"""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.infra.cold_storage import ColdStorage
from orchestrator.infra.db import connect, role_conninfo

Q = "t_part_heartbeat"
KIND = "instance_heartbeat"


@pytest.fixture
def pq(s, sq_owner, admin):
    """Queue Q of KIND created partitioned (the kind switched back afterwards), with an archive partition
    for a day past retention; dropped afterwards with its catalog rows."""
    su = admin("shared_queue")
    sq_owner.execute("UPDATE bus.queue_kinds SET partition_interval = '1 day' WHERE kind = %s", (KIND,))
    su.execute("GRANT CREATE ON SCHEMA partman TO own_shared_queue")   # as migrate does while it creates queues
    try:
        sq_owner.execute("SELECT bus.ensure_queue(%s, %s)", (Q, KIND))
    finally:
        su.execute("REVOKE CREATE ON SCHEMA partman FROM own_shared_queue")
        sq_owner.execute("UPDATE bus.queue_kinds SET partition_interval = NULL WHERE kind = %s", (KIND,))
    days = int(sq_owner.execute("SELECT bus.setting('retention_days') AS d").fetchone()["d"])
    sq_owner.execute("SET TimeZone = 'UTC'")
    sq_owner.execute("SELECT partman.create_partition_time(%s, ARRAY[date_trunc('day', now()) - make_interval(days => %s)])",
                     (f"pgmq.a_{Q}", days + 3))
    yield days
    sq_owner.execute("SELECT bus.drop_queue(%s)", (Q,))
    sq_owner.execute("DELETE FROM bus.cold_exports WHERE queue_name = %s", (Q,))
    sq_owner.execute("DELETE FROM bus.prune_log WHERE queue_name = %s", (Q,))
    left = sq_owner.execute("SELECT (SELECT count(*) FROM partman.part_config WHERE parent_table LIKE %s) "
                            "+ (SELECT count(*) FROM pg_tables WHERE schemaname = 'partman' AND tablename LIKE %s) AS n",
                            (f"pgmq.%_{Q}", f"template_pgmq_%_{Q}")).fetchone()["n"]
    assert left == 0, "bus.drop_queue leaves no pg_partman configuration or template behind"


def _archive(c, msg_id: int, age_days: int, hour: int = 12) -> None:
    c.execute(f"""INSERT INTO pgmq.a_{Q} (msg_id, read_ct, enqueued_at, archived_at, vt, message)
                  SELECT %s, 1, t, t, now(), '{{"type": "partition-test"}}'::jsonb
                    FROM (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                 - make_interval(days => %s) + make_interval(hours => %s) AS t) x""",
              (msg_id, age_days, hour))


def _partitions(c) -> list[str]:
    return [r["p"] for r in c.execute("SELECT c.relname::text AS p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                      "WHERE i.inhparent = %s::regclass ORDER BY 1", (f"pgmq.a_{Q}",))]


def _prune(s) -> None:
    with connect(role_conninfo(s, "shared_queue", "own_shared_queue")) as c:   # as pg_cron runs it
        c.execute("CALL bus.prune_archives()")


def _export(s, tmp_path) -> None:
    with ColdStorage(dataclasses.replace(s, cold_storage_dir=tmp_path)) as cs:
        out = cs.export(prune=False)
    assert all(r["result"].startswith("ok") for r in out), out


def test_partitioned_kind_creates_a_partitioned_queue_that_works(s, pq, sq_owner, bus_for):
    meta = sq_owner.execute("SELECT is_partitioned FROM pgmq.meta WHERE queue_name = %s", (Q,)).fetchone()
    assert meta["is_partitioned"]
    cfg = sq_owner.execute("SELECT parent_table, retention FROM partman.part_config WHERE parent_table LIKE %s ORDER BY 1",
                           (f"pgmq.%_{Q}",)).fetchall()
    assert [(r["parent_table"], r["retention"]) for r in cfg] == [(f"pgmq.a_{Q}", None), (f"pgmq.q_{Q}", None)], \
        "pg_partman's own retention must be off: it would drop unexported archives and unconsumed messages"
    idx = {r["i"] for r in sq_owner.execute("SELECT indexname AS i FROM pg_indexes WHERE tablename IN (%s, %s)",
                                            (f"q_{Q}", f"a_{Q}"))}
    assert {f"q_{Q}_vt_idx", f"q_{Q}_msgid_idx", f"a_{Q}_msgid_idx"} <= idx, idx
    assert not sq_owner.execute("SELECT has_schema_privilege('partman', 'CREATE') AS x").fetchone()["x"], \
        "the owner may create in schema partman only while migrate creates queues"
    # the bus's rules hold on it as on any queue: validation, grants, fenced acks
    b = bus_for("svc_nexus")
    mid = b.publish(Q, {"instance_id": "default", "service": "nexus", "at": "2026-01-01T00:00:00Z", "stats": {}})
    assert mid


def test_a_partition_is_dropped_only_when_every_day_in_it_is_exported_and_verified(s, pq, sq_owner, admin, tmp_path):
    days = pq
    sq = admin("shared_queue")
    old = f"a_{Q}_p" + sq.execute("SELECT to_char(date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => %s), "
                                  "'YYYY_MM_DD') AS d", (days + 3,)).fetchone()["d"]
    assert old in _partitions(sq)
    for i in range(5):
        _archive(sq, -910_000 - i, days + 3, hour=1 + i)                   # the old partition
    _archive(sq, -910_100, days + 40)                                      # older still: the default partition
    _archive(sq, -910_200, 1)                                              # recent: kept
    live = sq.execute("SELECT pgmq.send(%s, %s::jsonb) AS id", (Q, '{"instance_id": "default", "service": "genesis", '
                      '"at": "2026-01-01T00:00:00Z", "stats": {}}')).fetchone()["id"]

    _prune(s)   # nothing exported yet: nothing dropped, nothing deleted
    assert old in _partitions(sq)
    assert sq.execute(f"SELECT count(*) AS n FROM pgmq.a_{Q}").fetchone()["n"] == 7

    # rows changed after their export: the partition stays and its day goes back to unverified
    _export(s, tmp_path)
    sq.execute(f"UPDATE pgmq.a_{Q} SET message = '{{\"type\": \"changed\"}}' WHERE msg_id = -910003")
    _prune(s)
    assert old in _partitions(sq)
    row = sq.execute("SELECT verified_at, pruned_at, note FROM bus.cold_exports WHERE queue_name = %s AND day = "
                     "(now() AT TIME ZONE 'UTC')::date - %s", (Q, days + 3)).fetchone()
    assert row["verified_at"] is None and row["pruned_at"] is None and "export it again" in row["note"]

    _export(s, tmp_path)   # exported again, verified: now the whole partition goes in one DROP
    _prune(s)
    assert old not in _partitions(sq)
    left = {r["msg_id"] for r in sq.execute(f"SELECT msg_id FROM pgmq.a_{Q}")}
    assert left == {-910_200}, "the old day and the default partition's old row are gone, the recent row stays"
    assert sq.execute(f"SELECT count(*) AS n FROM pgmq.q_{Q} WHERE msg_id = %s", (live,)).fetchone()["n"] == 1
    cat = sq.execute("SELECT count(*) FILTER (WHERE pruned_at IS NOT NULL) AS pruned, count(*) AS n "
                     "FROM bus.cold_exports WHERE queue_name = %s", (Q,)).fetchone()
    assert cat["pruned"] == cat["n"] == 2
    logged = sq.execute("SELECT deleted FROM bus.prune_log WHERE queue_name = %s ORDER BY deleted DESC", (Q,)).fetchall()
    assert [r["deleted"] for r in logged] == [5, 1]


def test_a_partitioned_queue_wakes_its_listeners(s, pq, sq_owner):
    """The statement wake-up sits on the partitioned parent and names the queue's channel (pgmq's per-row
    trigger named the partition's, so consumers of a partitioned queue only ever polled)."""
    import psycopg
    from psycopg.types.json import Jsonb

    lis = psycopg.connect(role_conninfo(s, "shared_queue", "svc_centralcloud"), autocommit=True)
    try:
        lis.execute(f'LISTEN "pgmq.q_{Q}.INSERT"')
        sq_owner.execute("SELECT pgmq.send(%s, %s)", (Q, Jsonb({"type": "heartbeat", "instance_id": "default",
                                                                "service": "singularity", "at": "2026-12-06T00:00:00Z"})))
        got = [n.channel for n in lis.notifies(timeout=3, stop_after=1)]
    finally:
        lis.close()
    assert got == [f"pgmq.q_{Q}.INSERT"], got
