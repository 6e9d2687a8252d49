"""Schemas of fresh and upgraded installs, built in a scratch cluster of their own.

Used by tests/py/test_schema_drift.py (fresh install vs installs upgraded from each earlier release,
committed dumps up to date) and by `make dump-schema` (`python tests/py/schema_tools.py --write`).

Why a scratch cluster and not throwaway databases next to the real ones: the names are part of the
schema (`svc_` || current_database() gets the grants in a Singularity database, the CDC slot is
cdc_<database>), pg_cron can only be installed in its cluster's `postgres` database (one of the six),
and the schedules of a throwaway database would run against the real bus. The scratch cluster gets
every database under its real name (plus one extra Singularity instance), nothing in it runs (its
pg_cron jobs are unscheduled after each install), and it is destroyed afterwards.
"""

from __future__ import annotations

import difflib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # run as a script: the checkout's package
    sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from orchestrator.infra.cluster import Cluster  # noqa: E402
from orchestrator.infra.config import Settings  # noqa: E402
from orchestrator.infra.db import admin_conninfo, connect  # noqa: E402
from orchestrator.infra.migrate import Target, migrate  # noqa: E402

INSTANCE = "drift"  # the extra Singularity instance: database singularity_drift, role svc_singularity_drift

# (database, kind) of every database checked: the six databases and one extra Singularity instance.
CASES: list[tuple[str, str]] = [
    ("shared_queue", "shared_queue"),
    ("singularity", "singularity"),
    (f"singularity_{INSTANCE}", "singularity"),
    ("genesis", "genesis"),
    ("nexus", "nexus"),
    ("centralcloud", "centralcloud"),
    ("postgres", "postgres"),
]
# The databases with a committed dump (sql/schema/<db>.sql); the default instance stands for its kind.
DUMPED = ["shared_queue", "singularity", "genesis", "nexus", "centralcloud", "postgres"]
SCHEMA_DIR = ROOT / "sql" / "schema"
DUMP_COMMAND = "make dump-schema"

# Rows that migrations and procedures write and that are part of what an install is (schedules wanted,
# the bus catalog, seeded limits), compared as well as the DDL; timestamps and operator-owned values left out.
CATALOG: dict[str, list[str]] = {
    "*": [
        "SELECT migration_id FROM public._yoyo_migration ORDER BY 1",
        "SELECT jobname, schedule, command, run_as, comment FROM ops.cron_jobs ORDER BY 1",
        "SELECT key, comment FROM ops.settings ORDER BY 1",  # values are the operator's
    ],
    "shared_queue": [
        "SELECT * FROM bus.queue_kinds ORDER BY 1",
        "SELECT * FROM bus.message_fields ORDER BY 1, 2, 3",
        "SELECT * FROM bus.flows ORDER BY 1, 2, 3",
        "SELECT queue_name, kind, instance_id FROM bus.queues ORDER BY 1",
        "SELECT key FROM bus.settings ORDER BY 1",
    ],
    "genesis": ["SELECT to_jsonb(t) - 'updated_at' FROM genesis.limits t ORDER BY 1"],
    "nexus": [
        "SELECT to_jsonb(t) - 'created_at' - 'updated_at' FROM nexus.providers t ORDER BY 1",
        "SELECT to_jsonb(t) - 'created_at' - 'updated_at' FROM nexus.models t ORDER BY 1",
        "SELECT to_jsonb(t) - 'created_at' - 'updated_at' FROM nexus.routes t ORDER BY 1",
    ],
    "centralcloud": ["SELECT key FROM centralcloud.settings ORDER BY 1"],
}


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


# -- the releases to upgrade from ------------------------------------------------------------------
EXTERNAL_VARS = ("DB_HOST", "SHARED_QUEUE_HOST")


class External(RuntimeError):
    """A database server is configured by env: the scratch cluster would not be the only one touched."""


class NoHistory(RuntimeError):
    """The checkout has no usable git history (not a git checkout, or a shallow clone)."""


def _sql_paths(kind: str) -> list[str]:
    """What an install of KIND is made of: bootstrap, migrations and procedures of KIND and _common."""
    return [f"sql/{part}/{k}" for part in ("migrations", "procedures") for k in ("_common", kind)] + [
        "sql/bootstrap/_common.sql", f"sql/bootstrap/{kind}.sql"]


def _migration_set(commit: str, kind: str) -> tuple[str, ...]:
    names = _git("ls-tree", "-r", "--name-only", commit, "--", "sql/migrations/_common", f"sql/migrations/{kind}")
    return tuple(sorted(n for n in names.split() if n.endswith(".sql") and not n.endswith(".rollback.sql")))


def mainline_ref() -> str:
    """The branch whose first-parent history are the releases: SCHEMA_RELEASES_REF, else `main` when
    this checkout has it, else HEAD. Commits of an unmerged branch are no release of anyone's."""
    ref = os.environ.get("SCHEMA_RELEASES_REF", "main")
    ok = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                        capture_output=True).returncode == 0
    return ref if ok else "HEAD"


def mainline(paths: list[str]) -> list[tuple[str, str]]:
    """(commit, subject) of the mainline commits HEAD contains that changed PATHS, oldest first."""
    try:
        if _git("rev-parse", "--is-shallow-repository").strip() == "true":
            raise NoHistory("this checkout is a shallow clone")
        ancestors = set(_git("rev-list", "HEAD").split())
        log = _git("log", "--first-parent", "--reverse", "--format=%H %s", mainline_ref(), "--", *paths)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise NoHistory(f"no git history here ({str(e).strip()})") from None
    rows = [tuple(line.split(" ", 1)) for line in log.splitlines()]
    return [(c, subj) for c, subj in rows if c in ancestors]


def releases(kind: str, instance: bool = False, every_commit: bool = False) -> list[tuple[str, str]]:
    """(commit, label) of the earlier installs of KIND to upgrade from, oldest first.

    One per migration version on the mainline: the first commit at which KIND had that set of
    migrations (its procedures are the oldest of that version, so a procedure object dropped or changed
    later without a migration still shows). With EVERY_COMMIT, every mainline commit that changed KIND's
    SQL. INSTANCE: only releases that had extra Singularity instances. Commits whose SQL for KIND is
    HEAD's are left out (an upgrade from them is a fresh install).
    """
    head = _git("ls-tree", "-r", "HEAD", "--", *_sql_paths(kind))
    out, last = [], None
    for commit, subject in mainline(_sql_paths(kind)):
        mset = _migration_set(commit, kind)
        if mset and (every_commit or mset != last) and _git("ls-tree", "-r", commit, "--", *_sql_paths(kind)) != head:
            if not instance or _has_instances(commit):
                out.append((commit, f"{commit[:7]} ({len(mset)} migrations; {subject[:70]})"))
        last = mset
    return out


def _has_instances(commit: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "grep", "-q", "def add_instance", commit, "--", "orchestrator"],
                          capture_output=True).returncode == 0


# -- the scratch cluster ---------------------------------------------------------------------
class Scratch:
    """A cluster of its own under ROOT/.state/schema-scratch: fresh and upgraded installs, dumps."""

    def __init__(self, base: Path | None = None):
        configured = [k for k in os.environ if k in EXTERNAL_VARS or k.endswith("_DB_URL")]
        if configured:  # the scratch installs would reach that server (service roles' URLs, DB_HOST)
            raise External(f"{', '.join(sorted(configured))} set: the scratch cluster is embedded only; unset them")
        self.root = base or (ROOT / ".state" / "schema-scratch")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        if not (self.root / "sql").is_symlink():
            (self.root / "sql").symlink_to(ROOT / "sql")  # this checkout's SQL, under the scratch root
        self.s = Settings(root=self.root)
        self.cluster = Cluster(self.s)
        self._trees: dict[str, Path] = {}
        self._lock: int | None = None

    # lifecycle
    def start(self) -> Scratch:
        """Start a new cluster; a second user of the same scratch root (make dump-schema during the
        tests) waits for the first to finish."""
        self._lock = os.open(self.root / "lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.cluster.destroy()  # whatever a killed run left behind
        self.cluster.start()
        return self

    def destroy(self) -> None:
        try:
            self.cluster.destroy()
        finally:
            if self._lock is not None:
                os.close(self._lock)  # releases the flock
                self._lock = None

    def __enter__(self) -> Scratch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # earlier releases
    def release(self, commit: str) -> Path:
        """The orchestrator package and sql/ of COMMIT, extracted once under the scratch root, with its
        .state pointing at the scratch cluster's (cluster pointer, secrets)."""
        if commit not in self._trees:
            dest = self.root / "releases" / commit
            if not dest.is_dir():  # extracted next to it, then renamed: never half a tree
                tmp = self.root / "releases" / f".{commit}.{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "orchestrator", "sql"],
                                         capture_output=True, check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
                (tmp / ".state").symlink_to(self.s.state_dir)
                tmp.rename(dest)
            self._trees[commit] = dest
        return self._trees[commit]

    # installs
    def install(self, dbname: str, kind: str) -> None:
        """`orchestrator migrate` of DBNAME as this checkout does it."""
        migrate(self.s, progress=lambda _m: None, only=[Target(dbname, kind)])
        self._quiet()

    def install_all(self) -> None:
        """A fresh install of everything at this checkout, plus the extra instance."""
        migrate(self.s, progress=lambda _m: None)
        self.install(f"singularity_{INSTANCE}", "singularity")

    def _quiet(self) -> None:
        """No schedule runs in the scratch cluster: it is compared, not used."""
        with connect(admin_conninfo(self.s, "postgres")) as c:
            if c.execute("SELECT to_regclass('cron.job') IS NOT NULL AS x").fetchone()["x"]:
                c.execute("SELECT cron.unschedule(jobid) FROM cron.job")

    def drop(self, dbname: str) -> None:
        """Drop DBNAME (its CDC slot first); `postgres` is dropped and created empty again."""
        with connect(admin_conninfo(self.s, "template1")) as c:
            c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                      (f"cdc_{dbname}",))
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            if dbname == "postgres":
                c.execute("CREATE DATABASE postgres")

    def install_as_of(self, dbname: str, kind: str, commit: str) -> None:
        """What `orchestrator migrate` of COMMIT did to DBNAME: COMMIT's own orchestrator package and
        sql/ tree (git archive), run in a subprocess against this cluster."""
        tree = self.release(commit)
        r = subprocess.run([sys.executable, "-c", _OLD_MIGRATE, str(tree), dbname, kind], capture_output=True,
                           text=True, env={**os.environ, "ORCHESTRATOR_HOME": str(tree)}, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"migrate of {dbname} as of {commit[:7]} failed:\n{r.stdout}{r.stderr}")
        self._quiet()

    def install_release(self, dbname: str, kind: str, rels: list[tuple[str, str]], i: int) -> str:
        """DBNAME as release RELS[i] left it, from nothing. A release whose own fresh install failed (it
        worked only on databases migrated before) is reached the way such databases got there: from the
        release before it. Returns how it was reached ("" when installed fresh)."""
        commit = rels[i][0]
        self.drop(dbname)
        try:
            self.install_as_of(dbname, kind, commit)
            return ""
        except RuntimeError as e:
            if i == 0:
                raise
            why = [ln for ln in str(e).splitlines() if ln.startswith(("RuntimeError", "psycopg"))][-1:] or ["?"]
        via = self.install_release(dbname, kind, rels, i - 1)
        self.install_as_of(dbname, kind, commit)
        return f"reached from {rels[i - 1][0][:7]}{via} (its own fresh install fails: {why[0][:160]})"

    def upgraded(self, dbname: str, kind: str, rels: list[tuple[str, str]], i: int) -> tuple[str, str]:
        """DBNAME installed as of release RELS[i], then migrated by this checkout: (state(), how the
        release was reached)."""
        via = self.install_release(dbname, kind, rels, i)
        self.install(dbname, kind)
        return self.state(dbname, kind), via

    # what is compared
    def dump(self, dbname: str) -> str:
        """pg_dump --schema-only of DBNAME (owners, privileges, comments), without pg_dump's random
        \\restrict key and its version lines."""
        env = {**os.environ, **self.cluster.env()}
        out = subprocess.run(["pg_dump", "--schema-only", "-d", dbname], capture_output=True, text=True,
                             env=env, check=True).stdout
        lines = [line for line in out.splitlines() if not line.startswith(_VOLATILE)]
        return "\n".join(_sort_grant_runs(lines)) + "\n"

    def catalog(self, dbname: str, kind: str) -> str:
        """The rows of CATALOG for KIND, one line each, under a header per query."""
        out = []
        with connect(admin_conninfo(self.s, dbname)) as c:
            for q in CATALOG["*"] + CATALOG.get(kind, []):
                out.append(f"-- {q}")
                out += [repr(tuple(r.values())) for r in c.execute(q).fetchall()]
        return "\n".join(out) + "\n"

    def state(self, dbname: str, kind: str) -> str:
        return self.dump(dbname) + "\n-- catalog rows\n" + self.catalog(dbname, kind)


_VOLATILE = ("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by")  # pg_dump's random key, versions


def _sort_grant_runs(lines: list[str]) -> list[str]:
    """Each run of consecutive GRANT lines sorted: pg_dump prints an object's grants in the order of its
    ACL array, which is the order they were made in, not a difference in who may do what."""
    out, run = [], []
    for line in [*lines, ""]:
        if line.startswith("GRANT "):
            run.append(line)
            continue
        out += sorted(run)
        run = []
        out.append(line)
    return out[:-1]


# `orchestrator migrate` of an earlier release, in a subprocess: argv = its tree, database, kind.
# The modules are found by what they define, not by name, so releases from before and after a
# reorganisation of the package both work; migrate(settings, progress, only=[Target(db, kind)]) is the
# interface every release has had.
_OLD_MIGRATE = """
import importlib, re, sys
from pathlib import Path
tree, dbname, kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, str(tree))
import orchestrator
assert Path(orchestrator.__file__).resolve().is_relative_to(tree.resolve()), orchestrator.__file__

def module(*patterns):
    for p in sorted((tree / "orchestrator").rglob("*.py")):
        text = p.read_text(errors="replace")
        if all(re.search(pat, text, re.M) for pat in patterns):
            return importlib.import_module(".".join(p.relative_to(tree).with_suffix("").parts))
    raise SystemExit(f"no module of {tree} defines {patterns}")

Settings = module(r"^class Settings\\b").Settings
m = module(r"^def migrate\\(", r"^class Target\\b")
m.migrate(Settings(root=tree), progress=lambda _m: None, only=[m.Target(dbname, kind)])
"""


# -- committed dumps ---------------------------------------------------------------------------
_SECRET = re.compile(r"^(\s+password ')[^']*(',?)$", re.M)
_HOSTPORT = re.compile(r"^(\s+(?:host|port) ')[^']*(',?)$", re.M)


def committed_form(dump: str) -> str:
    """A dump as committed: passwords of user mappings and the cluster's host/port are placeholders."""
    dump = _SECRET.sub(r"\1<from the secrets file>\2", dump)
    return _HOSTPORT.sub(r"\1<cluster>\2", dump)


def committed_path(dbname: str) -> Path:
    return SCHEMA_DIR / f"{dbname}.sql"


def unified_diff(a: str, b: str, a_name: str, b_name: str, limit: int = 80) -> str:
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), a_name, b_name, lineterm="", n=2))
    more = f"\n... ({len(lines) - limit} more diff lines)" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def write_dumps(scratch: Scratch) -> list[Path]:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for db in DUMPED:
        p = committed_path(db)
        p.write_text(HEADER.format(db=db) + committed_form(scratch.dump(db)))
        written.append(p)
    return written


HEADER = """\
-- Schema of the `{db}` database after a fresh `orchestrator migrate` (pg_dump --schema-only).
-- Generated by `make dump-schema`; do not edit. tests/py/test_schema_drift.py fails when it is stale.
"""


def local_drift() -> list[str]:
    """This checkout's own (long-lived, migrated) databases against the committed dumps: what differs."""
    from orchestrator.infra.config import settings

    env = {**os.environ, **Cluster(settings()).env()}
    out = []
    for db in DUMPED:
        dump = subprocess.run(["pg_dump", "--schema-only", "-d", db], capture_output=True, text=True, env=env,
                              check=True).stdout
        lines = [ln for ln in dump.splitlines() if not ln.startswith(_VOLATILE)]
        have = HEADER.format(db=db) + committed_form("\n".join(_sort_grant_runs(lines)) + "\n")
        want = committed_path(db).read_text()
        if have != want:
            out.append(f"{db}: your database differs from {committed_path(db).relative_to(ROOT)}:\n"
                       + unified_diff(want, have, "committed", f"local {db}"))
    return out


USAGE = """usage: python tests/py/schema_tools.py --write | --check-local
  --write         a fresh install in a scratch cluster, dumped to sql/schema/<db>.sql (make dump-schema)
  --check-local   this checkout's migrated databases against those dumps (make check-drift): shows what
                  your long-lived databases kept from earlier work (run make dump-schema first if you
                  changed the schema)"""


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        with Scratch() as sc:
            sc.install_all()
            for p in write_dumps(sc):
                print(f"wrote {p.relative_to(ROOT)}")
        return 0
    if argv[1:] == ["--check-local"]:
        diffs = local_drift()
        print("\n\n".join(diffs) if diffs else f"{', '.join(DUMPED)}: as committed in sql/schema/")
        return 1 if diffs else 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
