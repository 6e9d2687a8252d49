"""The embedded cluster, migrate, authentication and isolation, as a user meets them."""

from __future__ import annotations

import os
import re
import subprocess
import threading

import psycopg
import pytest

from helpers import run_cli
from orchestrator.infra.cluster import Cluster
from orchestrator.infra.db import admin_conninfo, connect, role_conninfo
from orchestrator.infra.migrate import Target, migrate
from orchestrator.infra.secrets import role_password


def _dump(s, dbname: str) -> str:
    env = {**os.environ, **Cluster(s).env()}
    out = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-comments", "-d", dbname],
                         capture_output=True, text=True, env=env, check=True).stdout
    # pg_dump 15.14+ brackets the dump with \restrict <random key>: not part of the schema
    return "\n".join(line for line in out.splitlines()
                     if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")))


def test_cluster_status_env_and_seed_commands(s):
    st = run_cli("db", "status", check=True).stdout
    assert re.search(r"running\s+yes", st) and "data_dir" in st and "port" in st
    env_line = run_cli("db", "env", check=True).stdout.strip()
    assert env_line.startswith("export PGHOST=") and "PGPORT=" in env_line and "PGUSER=postgres" in env_line
    # the seeds' own command works after eval "$(orchestrator db env)"
    r = subprocess.run(["bash", "-c", f'{env_line}; psql shared_queue -Atc "SELECT queue_name FROM pgmq.list_queues();"'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "llm_requests" in r.stdout.split() and "dead_letters" in r.stdout.split()


def test_db_url_for_a_role_connects(s):
    url = run_cli("db", "url", "shared_queue", "--role", "svc_nexus", check=True).stdout.strip()
    with psycopg.connect(url) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "svc_nexus"


def test_pgmq_is_the_real_extension(admin):
    row = admin("shared_queue").execute("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'").fetchone()
    assert row["extversion"] == "1.13.0"


def test_service_role_needs_its_password_over_tcp_and_socket(s):
    port = Cluster(s).port
    sock = str(Cluster(s).socket_dir)
    for host in ("127.0.0.1", sock):
        for pw in ("", "wrong-password"):
            with pytest.raises(psycopg.OperationalError, match="password authentication failed|no password supplied"):
                psycopg.connect(host=host, port=port, user="svc_nexus", password=pw, dbname="nexus",
                                connect_timeout=5).close()
    # the superuser may not use TCP without a password either
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="", dbname="postgres").close()
    # and with its password the role gets in over the socket as well
    pw = role_password(s, "svc_nexus")
    with psycopg.connect(host=sock, port=port, user="svc_nexus", password=pw, dbname="nexus") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


@pytest.mark.parametrize("role,allowed", [
    ("svc_singularity", {"singularity", "shared_queue"}),
    ("svc_genesis", {"genesis", "shared_queue"}),
    ("svc_nexus", {"nexus", "shared_queue"}),
    ("svc_centralcloud", {"centralcloud", "shared_queue"}),
])
def test_connect_refused_across_databases(s, role, allowed):
    for db in ("singularity", "genesis", "nexus", "centralcloud", "shared_queue", "postgres"):
        if db in allowed:
            with connect(role_conninfo(s, db, role)) as c:
                assert c.execute("SELECT current_database() AS d").fetchone()["d"] == db
        else:
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                connect(role_conninfo(s, db, role)).close()


def test_migrate_is_idempotent(s):
    before = _dump(s, "shared_queue")
    r = run_cli("migrate", check=True)
    assert re.search(r"shared_queue .*migrations \d+\+0 new", r.stdout), r.stdout
    assert _dump(s, "shared_queue") == before
    st = run_cli("migrate", "status", check=True).stdout
    assert "pending 0" in st and "[ ]" not in st


def test_concurrent_migrators_are_safe(s):
    results: list[subprocess.CompletedProcess] = []
    ths = [threading.Thread(target=lambda: results.append(run_cli("migrate", timeout=300))) for _ in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]


def test_schedules_are_named_upserts(s, admin):
    a = admin("postgres")
    before = a.execute("SELECT jobid, jobname FROM cron.job ORDER BY jobname").fetchall()
    migrate(s, progress=lambda _m: None)
    after = a.execute("SELECT jobid, jobname FROM cron.job ORDER BY jobname").fetchall()
    assert before == after
    names = [r["jobname"] for r in after]
    assert "shared_queue:prune_archives" in names and "postgres:prune_cron_history" in names
    assert len(names) == len(set(names))


def test_migrate_reports_a_broken_procedure_clearly(s, tmp_path):
    """A bad repeatable file aborts migrate with the file named, and nothing of it is applied."""
    import shutil

    root = tmp_path / "proj"
    shutil.copytree(s.root / "sql", root / "sql")
    (root / "sql" / "procedures" / "genesis").mkdir(parents=True, exist_ok=True)
    (root / "sql" / "procedures" / "genesis" / "99_broken.sql").write_text(
        "CREATE FUNCTION ops.half_applied() RETURNS int LANGUAGE sql AS 'SELECT 1';\nSELEC broken;\n")
    from dataclasses import replace

    # secrets and the cluster pointer live in the real checkout's .state
    s2 = replace(s, root=root, secrets_file=s.state_dir / "secrets.env")
    (root / ".state").mkdir()
    shutil.copy(s.state_dir / "cluster.json", root / ".state" / "cluster.json")
    with pytest.raises(RuntimeError, match="99_broken.sql failed"):
        migrate(s2, progress=lambda _m: None, only=[Target("genesis", "genesis")])
    with connect(admin_conninfo(s, "genesis")) as c:
        assert c.execute("SELECT to_regprocedure('ops.half_applied()') AS f").fetchone()["f"] is None


def test_doctor_passes_on_the_embedded_cluster(s):
    r = run_cli("doctor")
    assert r.returncode == 0, r.stdout
    assert "0 to fix" in r.stdout


def test_pgmq_sql_only_fallback_is_the_real_api(s, admin):
    """When the extension directory is not writable, pgmq's own SQL-only install gives the same API."""
    from orchestrator.infra.migrate import install_pgmq

    a = admin("postgres")
    a.execute('DROP DATABASE IF EXISTS "pgmq_sqlonly" WITH (FORCE)')
    a.execute('CREATE DATABASE "pgmq_sqlonly"')
    try:
        with connect(admin_conninfo(s, "pgmq_sqlonly")) as c:
            assert install_pgmq(c, lambda _m: None, as_extension=False) == "sql-only 1.13.0"
            assert install_pgmq(c, lambda _m: None) == "sql-only (already installed)"
            assert c.execute("SELECT count(*) AS n FROM pg_extension WHERE extname = 'pgmq'").fetchone()["n"] == 0
            c.execute("SELECT pgmq.create('t')")
            mid = c.execute("SELECT pgmq.send('t', '{\"a\": 1}') AS id").fetchone()["id"]
            [m] = c.execute("SELECT * FROM pgmq.read('t', 30, 1)").fetchall()
            assert m["msg_id"] == mid and m["message"] == {"a": 1}
            assert c.execute("SELECT pgmq.archive('t', %s) AS ok", (mid,)).fetchone()["ok"]
            assert c.execute("SELECT queue_name FROM pgmq.list_queues()").fetchone()["queue_name"] == "t"
            assert c.execute("SELECT total_messages FROM pgmq.metrics('t')").fetchone()["total_messages"] == 1
    finally:
        a.execute('DROP DATABASE IF EXISTS "pgmq_sqlonly" WITH (FORCE)')


@pytest.mark.parametrize("dbname,role", [("singularity", "svc_singularity"), ("centralcloud", "svc_centralcloud")])
def test_bus_link_lets_sql_reach_shared_queue_as_the_service_role(s, dbname, role):
    """dblink server `bus` maps the service role to its own credentials: it may read the catalog, and
    pgmq refuses what the flow table does not allow (CentralCloud may not send LLM requests)."""
    with connect(role_conninfo(s, dbname, role)) as c:
        who = c.execute("SELECT u FROM extensions.dblink('bus', 'SELECT current_user::text') AS t(u text)").fetchone()["u"]
        assert who == role
        if role == "svc_centralcloud":
            with pytest.raises(psycopg.Error, match="permission denied"):
                c.execute("SELECT * FROM extensions.dblink('bus', $$SELECT pgmq.send('llm_requests', '{}'::jsonb)$$)"
                          " AS t(id bigint)")


def test_bus_link_is_not_usable_by_other_roles(s, admin):
    """PUBLIC has no USAGE on the foreign server: only the mapped roles can use it."""
    a = admin("singularity")
    assert not a.execute("SELECT has_server_privilege('svc_genesis', 'bus', 'USAGE') AS x").fetchone()["x"]
    assert a.execute("SELECT has_server_privilege('svc_singularity', 'bus', 'USAGE') AS x").fetchone()["x"]
