"""The five databases on three servers: three embedded clusters on loopback ports, `shared_queue` on one,
`singularity` and a second instance on another, `nexus`, `genesis` and `centralcloud` on the third.

`orchestrator migrate` sets every server up from one superuser URL per server (DB_ADMIN_URLS), `orchestrator
doctor` checks each server and each cross-server dblink link, then `orchestrator demo` runs in both instances
and the learning round trip goes through CentralCloud (its SQL reading `shared_queue` over dblink from
another server) back to both instances' inboxes.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from helpers import ROOT, run_cli
from orchestrator.infra.cluster import Cluster
from orchestrator.infra.config import Settings
from orchestrator.infra.db import admin_conninfo, connect, role_conninfo, service_role

pytestmark = pytest.mark.timeout(400)

SECOND = "two"
LAYOUT = {"a": ["shared_queue"], "b": ["singularity"], "c": ["nexus", "genesis", "centralcloud"]}
ADMIN_PASSWORD = "multi-server-admin"


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


@pytest.fixture(scope="module")
def servers():
    """Three fresh clusters (in .state/multi-server/, the cluster user must reach them), each with a
    superuser password for TCP; destroyed afterwards."""
    base = ROOT / ".state" / "multi-server"
    shutil.rmtree(base, ignore_errors=True)
    clusters = {}
    try:
        for name in LAYOUT:
            c = Cluster(Settings(root=base / name))
            c.start()
            with connect(c.superuser_conninfo()) as conn:
                conn.execute(f"ALTER ROLE postgres PASSWORD '{ADMIN_PASSWORD}'")
            clusters[name] = c
        yield clusters
    finally:
        for c in clusters.values():
            c.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def env(servers):
    e = {"ORCHESTRATOR_SECRETS_FILE": str(ROOT / ".state" / "multi-server" / "secrets.env"),
         "ORCHESTRATOR_LOG_LEVEL": "WARNING",
         "SHARED_QUEUE_COLD_STORAGE_DIR": str(ROOT / ".state" / "multi-server" / "cold")}
    for name, dbs in LAYOUT.items():
        for d in dbs:
            e[f"{d.upper()}_DB_URL"] = f"postgresql://127.0.0.1:{servers[name].port}/{d}"
    e["DB_ADMIN_URLS"] = " ".join(f"postgresql://postgres:{ADMIN_PASSWORD}@127.0.0.1:{c.port}/postgres"
                                  for c in servers.values())
    return e


@pytest.fixture(scope="module")
def ms(env) -> Settings:
    r = run_cli("migrate", env=env, timeout=300)
    assert r.returncode == 0, f"migrate across three servers failed:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.count("pg_cron on 127.0.0.1:") == len(LAYOUT), r.stdout
    r = run_cli("instance", "add", SECOND, env=env, timeout=300)
    assert r.returncode == 0, f"instance add failed:\n{r.stdout}\n{r.stderr}"
    return Settings.from_env({**os.environ, **env})


def _databases(c: Cluster) -> set[str]:
    with connect(c.superuser_conninfo()) as conn:
        return {r["datname"] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def test_multi_server_migrate_puts_each_database_on_its_server_and_doctor_checks_the_links(servers, env, ms):
    assert _databases(servers["a"]) == {"postgres", "shared_queue"}
    assert _databases(servers["b"]) == {"postgres", "singularity", f"singularity_{SECOND}"}
    assert _databases(servers["c"]) == {"postgres", "nexus", "genesis", "centralcloud"}
    # each database's schedules are in the pg_cron of its own server
    for name, c in servers.items():
        with connect(c.superuser_conninfo()) as conn:
            dbs = {r["d"] for r in conn.execute("SELECT DISTINCT database AS d FROM cron.job")}
        assert "postgres" in dbs and dbs <= _databases(c), (name, dbs)
    # the schedule report of every server arrives in shared_queue, none overwriting another's
    with connect(admin_conninfo(ms, "shared_queue")) as conn:
        reported = {r["d"] for r in conn.execute("SELECT DISTINCT database AS d FROM bus.schedule_runs")}
    assert {"singularity", f"singularity_{SECOND}", "centralcloud", "postgres"} <= reported, reported

    r = run_cli("doctor", env=env)
    assert r.returncode == 0, r.stdout
    assert "0 to fix" in r.stdout
    for link in ("link singularity -> shared_queue", f"link singularity_{SECOND} -> shared_queue",
                 "link centralcloud -> shared_queue"):
        assert f"{link}: dblink server bus as" in r.stdout, r.stdout
    assert r.stdout.count("link postgres @ 127.0.0.1:") == 3, r.stdout


def test_multi_server_doctor_names_a_broken_link_and_its_fix(servers, env, ms):
    """Stop the bus's server: each server's checks still run, and every link to the bus names the fix."""
    from orchestrator.infra.doctor import links

    with connect(admin_conninfo(ms, "centralcloud")) as conn:
        conn.execute("ALTER SERVER bus OPTIONS (SET port '1')")
    try:
        bad = [c for c in links(ms) if not c.ok]
        assert [c.name for c in bad] == ["link centralcloud -> shared_queue"], bad
        assert "orchestrator migrate" in bad[0].fix and "pg_hba.conf" in bad[0].fix
    finally:
        r = run_cli("migrate", env=env, timeout=300)   # points it back
        assert r.returncode == 0, r.stdout + r.stderr
    assert all(c.ok for c in links(ms))


def _demo(env, instance: str) -> str:
    r = run_cli("demo", "--instance", instance, "--timeout", "60",
                env={**env, "NEXUS_WEB_PORT": str(_free_port())}, timeout=240)
    assert r.returncode == 0, f"demo in {instance} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_multi_server_demo_and_learning_round_trip_through_centralcloud(servers, env, ms):
    from orchestrator.centralcloud.jobs import run_job

    for inst in ("default", SECOND):
        out = _demo(env, inst)
        assert "approved=True by demo" in out and "exit 0, output 'mean 5'" in out, out
        assert "folds the knowledge in" in out

    # CentralCloud (server c) aggregated both instances (server b) from shared_queue (server a)
    with connect(role_conninfo(ms, "centralcloud", "svc_centralcloud")) as c:
        per = {r["instance_id"]: r["occurrences"] for r in c.execute(
            "SELECT instance_id, occurrences FROM centralcloud.instance_patterns WHERE key = 'python.fstring'")}
        agg = c.execute("SELECT instances, total_occurrences FROM centralcloud.patterns "
                        "WHERE key = 'python.fstring'").fetchone()
    assert per == {"default": 2, SECOND: 2}, per
    assert agg["instances"] == 2 and agg["total_occurrences"] == 4

    # one more sync round: both instances learn that two instances saw it
    assert not run_job(ms, "pattern-sync").startswith("failed")
    for inst in ("default", SECOND):
        db = "singularity" if inst == "default" else f"singularity_{inst}"
        with connect(role_conninfo(ms, db, service_role("singularity", inst))) as c:   # as pg_cron runs it
            r = c.execute("SELECT core.run_job('consume_inbox') AS r").fetchone()["r"]
            assert not r.startswith("failed"), r
        with connect(admin_conninfo(ms, db)) as c:
            k = c.execute("SELECT instances, total_occurrences FROM core.global_knowledge "
                          "WHERE key = 'python.fstring'").fetchone()
        assert k and k["instances"] == 2 and k["total_occurrences"] == 4, (db, k)


def test_multi_server_settings_match_databases_to_servers_and_admin_urls():
    """No cluster needed: which server each database is on, and which superuser URL migrate uses there."""
    from psycopg.conninfo import conninfo_to_dict

    env = {"SHARED_QUEUE_DB_URL": "postgresql://h1:5432,h2:5433/shared_queue?target_session_attrs=read-write",
           "SINGULARITY_DB_URL": "postgresql://agents/singularity", "NEXUS_DB_URL": "postgresql://svc:6000/nexus",
           "DB_ADMIN_URLS": "postgresql://root:pw@h1:5432,h2:5433/postgres?target_session_attrs=read-write  "
                            "postgresql://admin:x@agents:5432/postgres"}
    s = Settings.from_env(env)
    assert s.server("shared_queue") == s.server("postgres") == "h1,h2:5432,5433"
    assert s.server("singularity_two") == s.server("singularity") == "agents:5432"   # instances follow singularity
    assert conninfo_to_dict(s.database_url_override("singularity_two"))["dbname"] == "singularity_two"
    assert s.server("genesis") is None                                              # the default server
    bus_admin = conninfo_to_dict(admin_conninfo(s, "postgres"))
    assert (bus_admin["user"], bus_admin["host"], bus_admin["dbname"]) == ("root", "h1,h2", "postgres")
    assert conninfo_to_dict(admin_conninfo(s, "singularity_two"))["user"] == "admin"
    svc = conninfo_to_dict(admin_conninfo(s, "nexus"))   # no admin URL there: DB_USER on the database's own host
    assert (svc["user"], svc["host"], svc["port"]) == ("postgres", "svc", "6000")
    assert s.servers(["shared_queue", "singularity", "nexus"]) == {
        "h1,h2:5432,5433": ["shared_queue"], "agents:5432": ["singularity"], "svc:6000": ["nexus"]}
    # a URL naming the DB_HOST server is that server: migrated once, not twice
    one = Settings.from_env({"DB_HOST": "db1", "SHARED_QUEUE_DB_URL": "postgresql://db1/shared_queue"})
    assert one.server("shared_queue") is one.server("genesis") is None
