"""Schema drift: every database installed fresh against the same database installed at each earlier
release and upgraded to this checkout; the committed schema dumps; merged migrations left unedited.

What "migrated step by step" means here. Procedures are repeatable and re-applied on every migrate,
so a database at version N was never "migrations <= N" alone: it is what `orchestrator migrate` of the
release that had N migrations left behind, i.e. those migrations, then that release's procedures,
bootstrap and Python steps (links, roles, schedules). HEAD's procedures cannot stand in for them (they
use columns of later migrations), and the old SQL through HEAD's Python is not what ran either (today's
migrate runs bootstrap with search_path pinned to pg_catalog, so an old `CREATE EXTENSION pgcrypto`
would land in pg_catalog). So each release is taken from git as it was: its own `orchestrator` package
and `sql/` tree (git archive), whose `migrate()` (same signature since the first commit) installs the
database in a scratch cluster; then this checkout's migrate upgrades it (pending migrations, then
procedures), and its pg_dump --schema-only (owners, grants, comments) plus the rows migrations and
procedures write (applied migrations, schedules wanted, the bus catalog, seeded settings keys) must
equal a fresh install's.

The releases: the mainline's first-parent history (`main` when the checkout has it, else HEAD;
SCHEMA_RELEASES_REF overrides), one release per migration version of the database, the first commit
that had that set of migrations (the oldest procedures of that version: an object a later commit stopped
creating, or changed in a procedure only, is still there after the upgrade and shows). The extra
Singularity instance starts at the first release that had instances. SCHEMA_DRIFT_EVERY_COMMIT=1 takes
every mainline commit that changed the database's SQL instead (slower; for a thorough run).

Why a scratch cluster (tests/py/schema_tools.py): pg_cron installs only in its cluster's `postgres`
database, and a Singularity database's grants and CDC slot follow its name, so every database is
installed under its real name, plus the instance singularity_drift; nothing runs there (schedules are
unscheduled after each install) and it is destroyed at the end.

Without git history (a shallow clone) the drift test fails and says how to fetch it; it never passes
by comparing two fresh installs.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import schema_tools as st


@pytest.fixture(scope="module")
def scratch():
    try:
        scratch = st.Scratch()
    except st.External as e:
        pytest.skip(str(e))
    with scratch as sc:
        sc.install_all()
        fresh = {db: sc.state(db, kind) for db, kind in st.CASES}
        dumps = {db: sc.dump(db) for db in st.DUMPED}
        yield sc, fresh, dumps


def _releases(dbname: str, kind: str) -> list[tuple[str, str]]:
    try:
        return st.releases(kind, instance=dbname != kind, every_commit=os.environ.get("SCHEMA_DRIFT_EVERY_COMMIT") == "1")
    except st.NoHistory as e:
        pytest.fail(f"{e}: the drift test installs earlier releases from git history. Fetch it "
                    "(git fetch --unshallow, or a CI checkout with fetch-depth: 0) and run again.")


@pytest.mark.parametrize("dbname,kind", st.CASES, ids=[db for db, _ in st.CASES])
def test_upgrade_from_each_release_matches_a_fresh_install(scratch, dbname, kind):
    sc, fresh, _ = scratch
    rels = _releases(dbname, kind)
    # every database but the newest has releases before this one; none at all would mean no history was read
    assert rels or dbname == "singularity_drift", f"no earlier release of {dbname} found on {st.mainline_ref()}"
    failures = []
    for i, (_commit, label) in enumerate(rels):
        upgraded, via = sc.upgraded(dbname, kind, rels, i)
        print(f"{dbname}: from {label}{' ' + via if via else ''}: {'same' if upgraded == fresh[dbname] else 'DIFFERS'}")
        if upgraded != fresh[dbname]:
            failures.append(f"== {dbname} installed at {label}{' ' + via if via else ''}, then migrated to this "
                            "checkout, differs from a fresh install:\n"
                            + st.unified_diff(fresh[dbname], upgraded, "fresh", "upgraded"))
    assert not failures, ("\n\n".join(failures) + "\n\nA migration must bring an existing database to what a "
                          "fresh install has (new migration; never edit a merged one).")


def test_committed_schema_dumps_are_current(scratch):
    """sql/schema/<db>.sql is a fresh install's pg_dump: every schema change shows in review."""
    _, _, dumps = scratch
    stale = []
    for db in st.DUMPED:
        want = st.HEADER.format(db=db) + st.committed_form(dumps[db])
        path = st.committed_path(db)
        have = path.read_text() if path.exists() else ""
        if have != want:
            stale.append(f"{path.relative_to(st.ROOT)} is {'stale' if have else 'missing'} for database {db}; "
                         f"regenerate with `{st.DUMP_COMMAND}` and commit it:\n"
                         + st.unified_diff(have, want, f"committed {db}.sql", f"fresh {db}", limit=40))
    assert not stale, "\n\n".join(stale)


def test_committed_dumps_hold_no_secrets():
    for db in st.DUMPED:
        text = st.committed_path(db).read_text()
        for line in text.splitlines():
            if line.strip().startswith(("password '", "host '", "port '")):
                assert "<" in line, f"sql/schema/{db}.sql: {line.strip()} (a secret or this machine's address)"


# Edits made to merged migrations before this test existed, each with what repairs it: FILE -> {commit: why}.
KNOWN_EDITS = {
    "sql/migrations/shared_queue/0001_bus_catalog.sql": {
        "44d9c71": "widened bus.queue_kinds.role with 'inbox' 3 minutes after the foundation commit; "
                   "shared_queue/0004_queue_kinds_inbox_role brings a database installed before along",
    },
}


def test_merged_migrations_are_never_edited():
    """A migration's text here is what it was when it reached the mainline: a database that applied it
    then never applies it again, so an edit would reach fresh installs only."""
    git = ["git", "-C", str(st.ROOT)]
    edited = []
    try:
        files = subprocess.run([*git, "ls-files", "sql/migrations"], check=True, capture_output=True,
                               text=True).stdout.split()
        for f in (f for f in files if f.endswith(".sql")):
            hist = st.mainline([f])
            if not hist:
                continue  # not on the mainline yet: this branch's own migration
            later = [c[:7] for c, _ in hist[1:] if c[:7] not in KNOWN_EDITS.get(f, {})]
            if later:
                edited.append(f"{f}: merged in {hist[0][0][:7]}, changed since in {', '.join(later)}")
            elif (st.ROOT / f).read_bytes() != subprocess.run([*git, "show", f"{hist[-1][0]}:{f}"],
                                                              capture_output=True, check=True).stdout:
                edited.append(f"{f}: merged in {hist[0][0][:7]}, changed on this branch or in this working tree")
    except st.NoHistory as e:
        pytest.fail(f"{e}: fetch the history (git fetch --unshallow) and run again.")
    assert not edited, "merged migrations edited (add a new migration instead):\n" + "\n".join(edited)
