"""The embedded PostgreSQL cluster: initdb, configure, start, stop, and where to find it."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.infra.config import Settings
from orchestrator.infra.output import UserError

SUPERUSER = "postgres"
PRELOAD = "pg_cron,pg_partman_bgw"


class ClusterError(UserError):
    """The embedded cluster could not be set up or started; the message says what to do."""


def bindir(configured: Path | None = None) -> Path:
    """The PostgreSQL 15 server binaries: ORCHESTRATOR_PG_BINDIR (Settings.pg_bindir), else Debian's, else PATH."""
    if configured:
        return configured
    for cand in ("/usr/lib/postgresql/15/bin",):
        if Path(cand, "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ClusterError("PostgreSQL 15 server binaries not found; run `make setup` (installs postgresql-15)")


def _os_user() -> str:
    """PostgreSQL refuses to run as root: then the cluster runs as Debian's `postgres` user."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError("running as root but no `postgres` system user exists; run `make setup`") from None
        return "postgres"
    return getpass.getuser()


def _as_user(user: str, argv: list[str]) -> list[str]:
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return argv


def _can_enter(user: str, path: Path) -> bool:
    """True when USER can traverse every directory down to PATH (and write its nearest existing part)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if os.geteuid() != 0:
        return os.access(probe, os.W_OK | os.X_OK)
    r = subprocess.run(_as_user(user, ["test", "-x", str(probe)]), capture_output=True)
    return r.returncode == 0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def as_cluster_user(argv: list[str]) -> list[str]:
    """ARGV run as the user clusters run as (Debian's `postgres` when this runs as root)."""
    return _as_user(_os_user(), argv)


def tree_base(s: Settings, name: str) -> Path:
    """Where a server tree NAME (e.g. the HA pair) lives: <state dir>/NAME when the cluster user can enter the
    checkout, else /var/lib/orchestrator/<checkout key>-NAME (a 0700 home or temporary folder, as in CI)."""
    s.state_dir.mkdir(parents=True, exist_ok=True)
    if _can_enter(_os_user(), s.state_dir):
        return s.state_dir / name
    key = hashlib.sha256(str(s.root).encode()).hexdigest()[:12]
    return Path("/var/lib/orchestrator") / f"{key}-{name}"


def port_free(port: int) -> bool:
    """Whether PORT on 127.0.0.1 is free to listen on."""
    return _port_free(port)


@dataclass
class Cluster:
    """One embedded cluster per checkout, keyed by the checkout's path so two checkouts never collide."""

    settings: Settings

    # -- where things live -------------------------------------------------
    @property
    def key(self) -> str:
        return hashlib.sha256(str(self.settings.root).encode()).hexdigest()[:12]

    @property
    def pointer(self) -> Path:
        return self.settings.state_dir / "cluster.json"

    def _load_pointer(self) -> dict:
        if self.pointer.exists():
            return json.loads(self.pointer.read_text())
        return {}

    def _choose_base(self) -> Path:
        user = _os_user()
        in_project = self.settings.state_dir / "cluster"
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.settings.state_dir, 0o755)
        if _can_enter(user, self.settings.state_dir):
            return in_project
        # The cluster user cannot enter the checkout (e.g. a 0700 home): keep the data outside, keyed by path.
        return Path("/var/lib/orchestrator") / self.key

    @property
    def base(self) -> Path:
        p = self._load_pointer()
        if p.get("base"):
            return Path(p["base"])
        return self._choose_base()

    @property
    def data_dir(self) -> Path:
        return self.base / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def socket_dir(self) -> Path:
        p = self._load_pointer()
        if p.get("socket_dir"):
            return Path(p["socket_dir"])
        cand = self.base / "run"
        if len(str(cand)) > 80:  # unix socket paths are limited to ~107 bytes
            cand = Path("/tmp") / f"orchestrator-{self.key}"
        return cand

    @property
    def port(self) -> int:
        p = self._load_pointer()
        if not p.get("port"):
            raise ClusterError("the embedded cluster is not initialised yet; run `make db` (or `orchestrator db start`)")
        return int(p["port"])

    # -- lifecycle -----------------------------------------------------------
    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(_as_user(_os_user(), argv), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:2])} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def _pick_port(self, avoid: int | None = None) -> int:
        start = 55432 + int(self.key, 16) % 2000
        for i in range(4000):
            port = 55432 + (start - 55432 + i) % 4000
            if port != avoid and _port_free(port):
                return port
        raise ClusterError("no free TCP port in 55432-59431; stop another cluster or set ORCHESTRATOR_PG_BINDIR")

    def _write_pointer(self, base: Path, port: int, socket_dir: Path) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.pointer.write_text(json.dumps({"base": str(base), "port": port, "socket_dir": str(socket_dir)}, indent=1))

    def _mkdir_owned(self, path: Path, mode: int = 0o700) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            shutil.chown(path, _os_user(), _os_user())

    def init(self) -> None:
        """initdb with scram-sha-256 for everyone but the superuser on its own socket."""
        base = self._choose_base() if not self._load_pointer() else self.base
        if not self._load_pointer():
            port = self._pick_port()
            sock = base / "run"
            if len(str(sock)) > 80:
                sock = Path("/tmp") / f"orchestrator-{self.key}"
            self._write_pointer(base, port, sock)
        if (self.data_dir / "PG_VERSION").exists():
            return
        if base.parent == Path("/var/lib/orchestrator"):
            base.parent.mkdir(parents=True, exist_ok=True)
        self._mkdir_owned(base)
        self._mkdir_owned(self.data_dir)
        bins = bindir(self.settings.pg_bindir)
        self.run([str(bins / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8", "--no-locale",
                   "--auth=trust"])  # pg_hba.conf is rewritten below, before the first start
        hba = self.data_dir / "pg_hba.conf"
        hba_text = (
            "# managed by orchestrator: the superuser may use its own socket without a password;\n"
            "# every other role proves itself with scram-sha-256, over the socket and TCP alike.\n"
            f"local   all   {SUPERUSER}   trust\n"
            "local   all   all   scram-sha-256\n"
            "host    all   all   127.0.0.1/32   scram-sha-256\n"
            "host    all   all   ::1/128        scram-sha-256\n"
        )
        self._write_as_owner(hba, hba_text)
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'orchestrator.conf'" not in text:
            self._write_as_owner(conf, text + "\ninclude_if_exists = 'orchestrator.conf'\n")

    def _write_as_owner(self, path: Path, text: str) -> None:
        path.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(path, _os_user(), _os_user())

    def _write_conf(self) -> None:
        sock = self.socket_dir
        conf = {
            "port": self.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{sock}'",
            "unix_socket_permissions": "0700",
            "shared_preload_libraries": f"'{PRELOAD}'",
            "cron.database_name": "'postgres'",
            "cron.use_background_workers": "on",
            "cron.max_running_jobs": 16,
            "max_worker_processes": 40,
            "wal_level": "logical",
            "max_replication_slots": 20,
            "max_wal_senders": 20,
            "max_slot_wal_keep_size": "'1GB'",  # a CDC slot nobody reads cannot pin WAL forever
            "max_connections": 300,
            "shared_buffers": "'256MB'",
            "password_encryption": "'scram-sha-256'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_min_duration_statement": -1,
            "autovacuum_naptime": "'10s'",
            "synchronous_commit": "on",
        }
        lines = ["# written by orchestrator on every start; edit orchestrator/cluster.py instead"]
        lines += [f"{k} = {v}" for k, v in conf.items()]
        self._write_as_owner(self.data_dir / "orchestrator.conf", "\n".join(lines) + "\n")

    def running(self) -> bool:
        if not self._load_pointer() or not (self.data_dir / "PG_VERSION").exists():
            return False
        r = self.run([str(bindir(self.settings.pg_bindir) / "pg_ctl"), "status", "-D", str(self.data_dir)], check=False)
        return r.returncode == 0

    def start(self) -> None:
        """Initialise if needed and start, idempotently; waits until the server accepts connections."""
        self.init()
        if self.running():
            return
        port = self.port
        if not _port_free(port):
            new = self._pick_port(avoid=port)
            self._write_pointer(self.base, new, self.socket_dir)
        self._mkdir_owned(self.socket_dir)
        self._write_conf()
        if not self.log_file.exists():
            self.log_file.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log_file, _os_user(), _os_user())
        r = self.run([str(bindir(self.settings.pg_bindir) / "pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                       "-w", "-t", "60"], check=False)
        if r.returncode != 0:
            tail = self.log_tail(15)
            raise ClusterError(f"PostgreSQL did not start (see {self.log_file}):\n{tail}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run([str(bindir(self.settings.pg_bindir) / "pg_isready"), "-h", str(self.socket_dir), "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise ClusterError(f"PostgreSQL is not accepting connections after {timeout}s; see {self.log_file}")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self.run([str(bindir(self.settings.pg_bindir) / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60"])

    def destroy(self) -> None:
        """Stop and delete the cluster's data (used by `make clean`)."""
        self.stop("immediate") if self.running() else None
        base = self.base
        if base.exists():
            shutil.rmtree(base)
        if self.socket_dir.exists():
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self.pointer.exists():
            self.pointer.unlink()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    # -- how to reach it ---------------------------------------------------
    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname)

    def env(self) -> dict[str, str]:
        return {"PGHOST": str(self.socket_dir), "PGPORT": str(self.port), "PGUSER": SUPERUSER}

    def status(self) -> dict[str, str]:
        p = self._load_pointer()
        return {
            "running": "yes" if self.running() else "no",
            "os_user": _os_user(),
            "data_dir": str(self.data_dir) if p else "(not initialised)",
            "in_project": "yes" if p and str(self.base).startswith(str(self.settings.root)) else "no",
            "port": str(p.get("port", "-")),
            "socket_dir": str(p.get("socket_dir", "-")),
            "log_file": str(self.log_file) if p else "-",
        }
