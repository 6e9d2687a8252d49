"""Cold storage of the bus's archives (seed 001, phase 3: "archive pgmq history to cold storage").

Archive rows past retention are written, one gzip file of JSON lines per queue per UTC day of
`archived_at`, under SHARED_QUEUE_COLD_STORAGE_DIR (`<queue>/<year>/<day>.jsonl.gz` with a
`<day>.manifest.json` beside it). A file is written to a temporary name, fsync'd, renamed, read back,
and only then recorded in `bus.cold_exports` — which refuses unless the file's rows are exactly the
live rows. `bus.prune_archives` (pg_cron, hourly) deletes only recorded, verified days. The lines are
the database's own text of each row (`bus.cold_lines`); the rows checksum is sha256 over the md5 of
every line, computed the same way in SQL (`bus.cold_digest`), so nothing is re-serialised here.
Everything runs as the shared_queue owner: no service role reads or writes the catalog.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, owner_conninfo
from orchestrator.infra.output import UserError, sql_error_text

FORMAT = 1
RESTORE_BATCH = 2000
LOCK = "bus:cold_storage"


class ColdFileError(UserError):
    """A cold file that cannot be trusted (missing, damaged, not what its manifest or the catalog says)."""


@dataclass(frozen=True)
class Digest:
    rows: int
    checksum: str
    first_msg_id: int | None
    last_msg_id: int | None


@dataclass(frozen=True)
class DayFile:
    """Where QUEUE's DAY lives under ROOT."""

    root: Path
    queue: str
    day: date

    @property
    def rel(self) -> str:
        return f"{self.queue}/{self.day:%Y}/{self.day.isoformat()}.jsonl.gz"

    @property
    def data(self) -> Path:
        return self.root / self.rel

    @property
    def manifest(self) -> Path:
        return self.data.with_name(f"{self.day.isoformat()}.manifest.json")


class Digester:
    """Row count, msg_id range and the rows checksum of lines, as bus.cold_digest computes them."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.rows = 0
        self.first: int | None = None
        self.last: int | None = None

    def add(self, line: bytes) -> None:
        self.h.update(hashlib.md5(line, usedforsecurity=False).hexdigest().encode())
        self.rows += 1
        msg_id = json.loads(line)["msg_id"]
        self.first = msg_id if self.first is None else self.first
        self.last = msg_id

    def result(self) -> Digest:
        return Digest(self.rows, self.h.hexdigest(), self.first, self.last)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_write(path: Path, write: Callable) -> None:
    """WRITE(binary file) into a temporary name beside PATH, fsync it, rename it to PATH, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_lines(f, lines: Iterable[str]) -> Digest:
    d = Digester()
    with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        for line in lines:
            b = line.encode()
            d.add(b)
            gz.write(b + b"\n")
    return d.result()


def file_lines(path: Path) -> Iterator[bytes]:
    """The lines of a cold file, without their newline."""
    with gzip.open(path, "rb") as gz:
        for raw in gz:
            yield raw.rstrip(b"\n")


def _sha256(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def read_manifest(df: DayFile) -> dict:
    try:
        m = json.loads(df.manifest.read_text())
    except FileNotFoundError:
        raise ColdFileError(f"{df.manifest} is missing: restore it with its data file from a backup") from None
    except (ValueError, OSError) as e:
        raise ColdFileError(f"{df.manifest} cannot be read ({e}): restore it from a backup") from None
    if m.get("format") != FORMAT or m.get("queue") != df.queue or m.get("day") != df.day.isoformat():
        raise ColdFileError(f"{df.manifest} is not the manifest of {df.queue} on {df.day}: restore it from a backup")
    return m


def check_file(df: DayFile, expect: dict | None = None) -> Digest:
    """Read DF back; ColdFileError with the reason unless its bytes and rows are what its manifest (and
    EXPECT, the catalog's row, if given) say."""
    m = read_manifest(df)
    try:
        sha, size = _sha256(df.data)
    except FileNotFoundError:
        raise ColdFileError(f"{df.data} is missing: restore it from a backup") from None
    for source, want in (("manifest", m), ("catalog", expect or {})):
        if want.get("file_sha256") and want["file_sha256"] != sha:
            raise ColdFileError(f"{df.data} is damaged: its sha256 {sha[:12]}… is not the {source}'s "
                                f"{want['file_sha256'][:12]}…; restore it from a backup")
    d = Digester()
    try:
        for line in file_lines(df.data):
            d.add(line)
    except (OSError, EOFError, zlib.error, ValueError, KeyError) as e:
        raise ColdFileError(f"{df.data} cannot be read back ({type(e).__name__}: {e}); restore it from a backup") from None
    got = d.result()
    for source, want in (("manifest", m), ("catalog", expect or {})):
        if "rows" in want and (want["rows"] != got.rows or want["rows_checksum"] != got.checksum):
            raise ColdFileError(f"{df.data} holds {got.rows} rows (checksum {got.checksum[:12]}…), the {source} says "
                                f"{want['rows']} (checksum {want['rows_checksum'][:12]}…); restore it from a backup")
    if size != m.get("bytes"):
        raise ColdFileError(f"{df.data} is {size} bytes, its manifest says {m.get('bytes')}: restore it from a backup")
    return got


class ColdStorage:
    """Export, list, verify and restore; one owner connection to shared_queue (autocommit)."""

    def __init__(self, s: Settings, root: Path | None = None):
        self.s = s
        self.root = root or s.cold_dir
        self.conn = connect(owner_conninfo(s, "shared_queue"))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ColdStorage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        return self.conn.execute(sql, params).fetchall()

    # -- export ------------------------------------------------------------------------
    def pending(self, limit: int = 1000) -> list[dict]:
        return self._rows("SELECT * FROM bus.cold_pending(%s)", (limit,))

    def write_day(self, queue: str, day: date) -> tuple[DayFile, Digest, str, int]:
        """Write QUEUE's DAY to its file and manifest, durably, and read it back; not yet recorded."""
        df = DayFile(self.root, queue, day)
        box: dict = {}
        with self.conn.transaction(), self.conn.cursor(name="cold_lines") as cur:
            cur.itersize = 5000
            cur.execute("SELECT line FROM bus.cold_lines(%s, %s)", (queue, day))
            _durable_write(df.data, lambda f: box.setdefault("d", _write_lines(f, (r["line"] for r in cur))))
        written: Digest = box["d"]
        sha, size = _sha256(df.data)
        manifest = {"format": FORMAT, "queue": queue, "day": day.isoformat(), "file": df.rel, "rows": written.rows,
                    "first_msg_id": written.first_msg_id, "last_msg_id": written.last_msg_id,
                    "rows_checksum": written.checksum, "file_sha256": sha, "bytes": size,
                    "exported_at": datetime.now(UTC).isoformat(), "line": "to_jsonb of a pgmq archive row"}
        _durable_write(df.manifest, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        check_file(df)
        return df, written, sha, size

    def export_day(self, queue: str, day: date) -> dict:
        """Export QUEUE's DAY and record it (verified); the result says what happened."""
        try:
            df, d, sha, size = self.write_day(queue, day)
            self.conn.execute("SELECT bus.cold_record(%s, %s, %s, %s, %s, %s, %s)",
                              (queue, day, df.rel, d.rows, d.checksum, sha, size))
        except (OSError, ColdFileError) as e:
            return {"queue": queue, "day": day, "result": f"failed: {e}"}
        except psycopg.Error as e:
            return {"queue": queue, "day": day, "result": f"failed: {sql_error_text(e)}"}
        return {"queue": queue, "day": day, "result": f"ok: {d.rows} rows, {size} bytes in {df.rel}"}

    def export(self, limit: int = 1000, prune: bool = True, progress: Callable | None = None) -> list[dict]:
        """Export every (queue, day) past retention not yet exported, then (PRUNE) delete the verified days."""
        if not self._rows("SELECT pg_try_advisory_lock(hashtext(%s)) AS ok", (LOCK,))[0]["ok"]:
            return [{"queue": "-", "day": None, "result": "skipped: another export is running"}]
        try:
            out = []
            for p in self.pending(limit):
                out.append(self.export_day(p["queue_name"], p["day"]))
                if progress:
                    progress(out[-1])
            if prune:
                self.conn.execute("CALL bus.prune_archives()")
            return out
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK,))

    # -- list, verify ------------------------------------------------------------------
    def catalog(self) -> list[dict]:
        rows = self._rows("SELECT * FROM bus.cold_catalog()")
        for r in rows:
            r["on_disk"] = bool(r["file"]) and (self.root / r["file"]).exists()
        return rows

    def _export(self, queue: str, day: date) -> dict | None:
        rows = self._rows("SELECT * FROM bus.cold_exports WHERE queue_name = %s AND day = %s", (queue, day))
        return rows[0] if rows else None

    def verify(self) -> list[dict]:
        """Read back every recorded file; a damaged one makes its day unprunable (while rows are left)."""
        out = []
        for e in self._rows("SELECT * FROM bus.cold_exports ORDER BY day, queue_name"):
            df = DayFile(self.root, e["queue_name"], e["day"])
            try:
                d = check_file(df, e)
                out.append({"queue": df.queue, "day": df.day, "ok": True, "result": f"ok: {d.rows} rows"})
            except ColdFileError as err:
                if e["pruning_at"] is None:
                    self.conn.execute("SELECT bus.cold_unverify(%s, %s, %s)", (df.queue, df.day, str(err)))
                out.append({"queue": df.queue, "day": df.day, "ok": False, "result": f"failed: {err}"})
        return out

    # -- restore -----------------------------------------------------------------------
    def restore(self, queue: str, day: date) -> int:
        """Check QUEUE's DAY file, then restore its rows next to the live archives; returns rows added."""
        df = DayFile(self.root, queue, day)
        check_file(df, self._export(queue, day))
        added, batch = 0, []
        for line in file_lines(df.data):
            batch.append(line.decode())
            if len(batch) >= RESTORE_BATCH:
                added += self._restore_batch(queue, day, batch)
                batch = []
        return added + self._restore_batch(queue, day, batch)

    def _restore_batch(self, queue: str, day: date, lines: list[str]) -> int:
        return self._rows("SELECT bus.cold_restore_lines(%s, %s, %s) AS n", (queue, day, lines))[0]["n"]

    def unrestore(self, queue: str, day: date) -> int:
        return self._rows("SELECT bus.cold_unrestore(%s, %s) AS n", (queue, day))[0]["n"]
