"""`orchestrator instance add`: its own database, role, schedules, outbox and reply queues; isolated."""

from __future__ import annotations

import psycopg
import pytest

from orchestrator.infra.db import admin_conninfo, connect, role_conninfo
from orchestrator.infra.instances import (
    InstanceError,
    add_instance,
    list_instances,
    remove_instance,
    rotate_key,
)

INST = "tiso"


@pytest.fixture(scope="module")
def inst(s):
    remove_instance(s, INST)
    add_instance(s, INST)
    add_instance(s, INST)  # idempotent
    yield INST
    remove_instance(s, INST)


def test_instance_has_its_own_everything(s, inst, run_cli):
    db, role = f"singularity_{inst}", f"svc_singularity_{inst}"
    with connect(role_conninfo(s, db, role)) as c:
        assert c.execute("SELECT core.instance_id() AS i").fetchone()["i"] == inst
        c.execute("INSERT INTO core.agents (id) VALUES ('x1')")
        c.execute("INSERT INTO core.agent_sessions (agent_id, state) VALUES ('x1', '{\"k\": 1}')")
        assert c.execute("SELECT core.run_job('heartbeat') AS r").fetchone()["r"].startswith("ok")
        mid = c.execute("SELECT id FROM outbox.messages WHERE message->'stats' ? 'agents'").fetchone()["id"]
        r = c.execute("SELECT core.run_job('drain_outbox') AS r").fetchone()["r"]
        assert r.startswith("ok"), r
        assert c.execute("SELECT core.run_job('consume_inbox') AS r").fetchone()["r"].startswith("ok")
    with connect(admin_conninfo(s, "shared_queue")) as sq:
        got = sq.execute("SELECT message FROM pgmq.q_instance_heartbeat WHERE message->>'id' = %s", (mid,)).fetchone()
        assert got and got["message"]["instance_id"] == inst
        queues = {r["queue_name"] for r in sq.execute("SELECT queue_name FROM bus.queues WHERE instance_id = %s", (inst,))}
    assert {f"llm_results_{inst}", f"job_results_{inst}", f"knowledge_updates_{inst}"} <= queues
    with connect(admin_conninfo(s, "postgres")) as pg:
        jobs = pg.execute("SELECT jobname, username, database FROM cron.job WHERE jobname LIKE %s", (f"{db}:%",)).fetchall()
    assert len(jobs) == 10 and {j["database"] for j in jobs} == {db}
    # every job as the instance's own role, but the drain (a committing procedure) as the owner
    assert {j["jobname"]: j["username"] for j in jobs if j["username"] != role} == {f"{db}:drain_outbox": "own_singularity"}
    assert any(i["instance_id"] == inst and i["exists"] for i in list_instances(s))
    out = run_cli("instance", "list", check=True).stdout
    assert f"singularity_{inst}" in out
    out = run_cli("autonomous", "queue-status", "--instance", inst, check=True).stdout
    assert "last drain" in out


def test_instances_cannot_reach_each_other(s, inst):
    db, role = f"singularity_{inst}", f"svc_singularity_{inst}"
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect(role_conninfo(s, "singularity", role))
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect(role_conninfo(s, db, "svc_singularity"))
    with connect(role_conninfo(s, "shared_queue", role)) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM pgmq.read('llm_results', 1, 1)")
    with connect(role_conninfo(s, "shared_queue", "svc_singularity")) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(f"SELECT * FROM pgmq.read('llm_results_{inst}', 1, 1)")
    # the instance's own dblink uses its own role: it cannot read the default instance's inbox either
    with connect(role_conninfo(s, db, role)) as c:
        with pytest.raises(psycopg.Error, match="permission denied"):
            c.execute("SELECT * FROM extensions.dblink('bus', 'SELECT msg_id FROM pgmq.read(''knowledge_updates'', 1, 1)') AS t(id bigint)")


def test_rotate_key_new_sessions_use_it_old_ones_reencrypted(s, inst):
    db, role = f"singularity_{inst}", f"svc_singularity_{inst}"
    r = rotate_key(s, inst)
    assert r["key_id"] >= 2 and r["reencrypted"] >= 1
    with connect(role_conninfo(s, db, role)) as c:
        c.execute("INSERT INTO core.agent_sessions (agent_id, state) VALUES ('x1', '{\"k\": 2}')")
        assert {x["key_id"] for x in c.execute("SELECT key_id FROM core.agent_sessions")} == {r["key_id"]}
    with connect(role_conninfo(s, db, "own_singularity")) as own:
        states = [x["st"] for x in own.execute("SELECT core.session_state(id) AS st FROM core.agent_sessions ORDER BY id")]
    assert states == [{"k": 1}, {"k": 2}]


def test_bad_instance_ids(s):
    with pytest.raises(InstanceError, match="invalid instance id"):
        add_instance(s, "Bad-Id")
    with pytest.raises(InstanceError):
        add_instance(s, "default")
