"""What `orchestrator migrate` trusts: nothing an owner role can write runs as the superuser.

An owner role (own_genesis, own_shared_queue, ...) writes ops.cron_jobs and bus.instances; migrate
reads them as that owner (so a view or function planted there runs with the owner's rights only),
and a schedule's run_as must be the database's service role or owner: anything else, a superuser
above all, is refused with the job, the role and the fix named, and never scheduled.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from orchestrator.infra.db import admin_conninfo, connect, role_conninfo
from orchestrator.infra.migrate import Target, instance_targets, migrate, sync_schedules

FRESH = "trust_genesis"


@pytest.fixture
def fresh_genesis(s, admin):
    """A genesis database of its own (dropped afterwards), migrated like the real one."""
    a = admin("postgres")

    def drop() -> None:
        a.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE %s", (f"{FRESH}:%",))
        a.execute(f'DROP DATABASE IF EXISTS "{FRESH}" WITH (FORCE)')

    drop()
    migrate(s, progress=lambda _m: None, only=[Target(FRESH, "genesis")])
    try:
        yield Target(FRESH, "genesis")
    finally:
        drop()


def _jobs(admin) -> dict[str, str]:
    rows = admin("postgres").execute("SELECT jobname, username FROM cron.job WHERE jobname LIKE %s", (f"{FRESH}:%",))
    return {r["jobname"]: r["username"] for r in rows}


def test_run_as_superuser_kept_by_an_owner_trigger_is_refused_and_never_scheduled(s, admin, fresh_genesis):
    assert _jobs(admin) == {f"{FRESH}:prune_executions": "svc_genesis"}
    with connect(role_conninfo(s, FRESH, "own_genesis")) as o:
        # the owner's trigger keeps every row (migrate's own DELETE included) and makes it run as postgres
        o.execute("""CREATE FUNCTION ops.keep_root() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF TG_OP = 'DELETE' THEN RETURN NULL; END IF;
                         NEW.run_as := 'postgres';
                         RETURN NEW;
                     END $$""")
        o.execute("CREATE TRIGGER keep_root BEFORE INSERT OR UPDATE OR DELETE ON ops.cron_jobs "
                  "FOR EACH ROW EXECUTE FUNCTION ops.keep_root()")
        o.execute("INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as) "
                  "VALUES ('rootjob', '* * * * *', 'SELECT 1', 'postgres')")
    with pytest.raises(RuntimeError) as err:
        migrate(s, progress=lambda _m: None, only=[fresh_genesis])
    msg = str(err.value)
    assert f"{FRESH}:rootjob" in msg and f"{FRESH}:prune_executions" in msg, msg
    assert "run_as 'postgres'" in msg and "superuser" in msg, msg
    assert "svc_genesis" in msg and "own_genesis" in msg and "UPDATE ops.cron_jobs" in msg, msg
    jobs = _jobs(admin)
    assert f"{FRESH}:rootjob" not in jobs
    assert "postgres" not in jobs.values(), jobs
    # the job already in pg_cron keeps the role it had: nothing an owner wrote changed it
    assert jobs == {f"{FRESH}:prune_executions": "svc_genesis"}


@pytest.mark.parametrize("role", ["svc_nexus", "own_nexus", "nobody_at_all"])
def test_run_as_outside_the_databases_own_roles_is_refused(s, admin, fresh_genesis, role):
    with connect(role_conninfo(s, FRESH, "own_genesis")) as o:
        o.execute("INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as) VALUES ('other', '* * * * *', "
                  "'SELECT 1', %s)", (role,))
    with pytest.raises(RuntimeError, match=rf"{FRESH}:other.*run_as '{role}'"):
        sync_schedules(admin("postgres"), s, fresh_genesis)
    assert f"{FRESH}:other" not in _jobs(admin)


def test_run_as_the_owner_or_service_role_is_scheduled(s, admin, fresh_genesis):
    with connect(role_conninfo(s, FRESH, "own_genesis")) as o:
        o.execute("INSERT INTO ops.cron_jobs (jobname, schedule, command, run_as) VALUES "
                  "('as_owner', '1 1 * * *', 'SELECT 1', 'own_genesis'), ('as_svc', '1 1 * * *', 'SELECT 1', 'svc_genesis')")
    assert sync_schedules(admin("postgres"), s, fresh_genesis) == 3
    jobs = _jobs(admin)
    assert jobs[f"{FRESH}:as_owner"] == "own_genesis" and jobs[f"{FRESH}:as_svc"] == "svc_genesis"


def test_an_owner_view_over_cron_jobs_is_not_executed_as_the_superuser(s, admin, fresh_genesis):
    with connect(role_conninfo(s, FRESH, "own_genesis")) as o:
        o.execute("ALTER TABLE ops.cron_jobs RENAME TO cron_jobs_real")
        o.execute("CREATE TABLE ops.spy_log (who name, super boolean)")
        o.execute("""CREATE FUNCTION ops.spy() RETURNS text LANGUAGE plpgsql AS $$
                     BEGIN
                         INSERT INTO ops.spy_log SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user;
                         RETURN NULL;
                     END $$""")
        o.execute("CREATE VIEW ops.cron_jobs AS SELECT jobname, schedule, command, run_as, comment, ops.spy() AS spy "
                  "FROM ops.cron_jobs_real")
    sync_schedules(admin("postgres"), s, fresh_genesis)
    with connect(role_conninfo(s, FRESH, "own_genesis")) as o:
        ran = o.execute("SELECT who, super FROM ops.spy_log").fetchall()
    assert ran, "the view was read"
    assert {(r["who"], r["super"]) for r in ran} == {("own_genesis", False)}


def test_an_owner_view_over_bus_instances_is_not_executed_as_the_superuser(s, sq_owner):
    sq_owner.execute("CREATE TABLE bus.t_spy_log (who name, super boolean)")
    try:
        with sq_owner.transaction():
            sq_owner.execute("""CREATE FUNCTION bus.t_spy() RETURNS text LANGUAGE plpgsql AS $$
                                BEGIN
                                    INSERT INTO bus.t_spy_log SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user;
                                    RETURN NULL;
                                END $$""")
            sq_owner.execute("ALTER TABLE bus.instances RENAME TO t_instances_real")
            sq_owner.execute("CREATE VIEW bus.instances AS SELECT i.* FROM bus.t_instances_real i, (SELECT bus.t_spy()) x")
            # (inside one transaction: everyone else keeps seeing the real table; migrate reads with its own
            # connection, so commit first and put everything back right after)
        try:
            targets = instance_targets(s)
        finally:
            with sq_owner.transaction():
                sq_owner.execute("DROP VIEW bus.instances")
                sq_owner.execute("ALTER TABLE bus.t_instances_real RENAME TO instances")
                sq_owner.execute("DROP FUNCTION bus.t_spy()")
        ran = sq_owner.execute("SELECT who, super FROM bus.t_spy_log").fetchall()
    finally:
        sq_owner.execute("DROP TABLE IF EXISTS bus.t_spy_log")
    assert isinstance(targets, list)
    assert ran and {(r["who"], r["super"]) for r in ran} == {("own_shared_queue", False)}


def test_an_instance_id_that_is_not_an_id_is_refused(s, sq_owner):
    """bus.instances is the owner's: an id read there must still look like one before it names a database."""
    with pytest.raises(RuntimeError, match=r"instance id 'x\"; DROP' .* is not an instance id"):
        with sq_owner.transaction():   # rolled back: nobody else ever sees the row
            sq_owner.execute("ALTER TABLE bus.instances DROP CONSTRAINT instances_instance_id_check")
            sq_owner.execute("INSERT INTO bus.instances (instance_id, role) VALUES ('x\"; DROP', 'svc_t_nobody')")
            instance_targets(s, conn=sq_owner)   # read the way migrate reads it, on the owner's connection


def test_no_superuser_connection_into_a_service_database_outside_the_pinned_helper():
    """orchestrator/*.py opens the superuser's connection to a database other than `postgres` only through
    db.superuser_conn, which pins search_path = pg_catalog, pg_temp (owner-made objects in public or a
    temp schema are never looked up), and only for SQL that reads nothing an owner role controls."""
    root = Path(__file__).resolve().parents[2] / "orchestrator"
    bad = []
    for f in root.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "admin_conninfo":
                args = node.args[1:2] or [k.value for k in node.keywords if k.arg == "dbname"]
                target = args[0] if args else ast.Constant("postgres")  # the default database
                if f.name == "db.py" or (isinstance(target, ast.Constant) and target.value == "postgres"):
                    continue
                bad.append(f"{f.relative_to(root.parent)}:{node.lineno}")
    assert not bad, f"superuser connections into service databases outside db.superuser_conn: {bad}"


def test_superuser_conn_pins_the_search_path(s):
    from orchestrator.infra.db import superuser_conn

    with superuser_conn(s, "genesis") as c:
        assert c.execute("SHOW search_path").fetchone()["search_path"] == "pg_catalog, pg_temp"
        assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()["rolsuper"]
    with connect(admin_conninfo(s, "postgres")) as c:  # the superuser's own database: nothing to pin
        assert c.execute("SELECT current_database() AS d").fetchone()["d"] == "postgres"


def test_the_schedule_report_runs_shared_queues_code_as_its_owner_not_the_superuser(s, admin, sq_owner):
    """postgres:report_schedules (pg_cron, as the superuser) pushes the runs into shared_queue by calling
    bus._report_schedules_from there, a function own_shared_queue owns and may replace: the call must arrive
    as own_shared_queue (a dblink user mapping), never as the superuser."""
    from orchestrator.infra.migrate import apply_procedures

    sq_owner.execute("CREATE TABLE bus.t_spy_log (who name, super boolean)")
    try:
        sq_owner.execute("""CREATE OR REPLACE FUNCTION bus._report_schedules_from(p_jobs jsonb, p_databases text[])
                            RETURNS integer
                            LANGUAGE plpgsql AS $$
                            BEGIN
                                INSERT INTO bus.t_spy_log SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user;
                                RETURN 0;
                            END $$""")
        admin("postgres").execute("SELECT ops.report_schedules()")   # what pg_cron runs each minute
        ran = sq_owner.execute("SELECT who, super FROM bus.t_spy_log").fetchall()
    finally:
        sq_owner.execute("DROP TABLE IF EXISTS bus.t_spy_log")
        apply_procedures(s, Target("shared_queue", "shared_queue"))   # the real bus._report_schedules_from again
    assert {(r["who"], r["super"]) for r in ran} == {("own_shared_queue", False)}
