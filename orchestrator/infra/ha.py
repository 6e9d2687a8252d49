"""A local HA pair for the bus, to try it and to test failover: a pg_auto_failover monitor, a primary and a
synchronous secondary (Debian `postgresql-15-auto-failover`), each run by its own `pg_autoctl run`.

pg_auto_failover, not new code of ours: the monitor health-checks both nodes and drives the state machine
(primary/secondary -> wait_primary + promotion when the primary is lost), `synchronous_standby_names` is
managed by it, so a commit acknowledged to a worker is on both nodes. Clients find the primary themselves
with a multi-host URL and `target_session_attrs=read-write` (libpq skips the node that is down and the one
that only reads). On a real deployment each node is a host of its own and pg_autoctl runs under systemd;
here all three are on loopback ports under `.state/<name>/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.infra.cluster import ClusterError, as_cluster_user, bindir, port_free, tree_base
from orchestrator.infra.config import Settings

NODES = ("node1", "node2")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""

# The monitor decides faster than its defaults (5 s checks, 20 s before a node is unhealthy): a lost primary
# is noticed within a few seconds. Loopback only; on a network keep the defaults or measure first.
MONITOR_CONF = {
    "shared_buffers": "'32MB'",
    "pgautofailover.health_check_period": 1000,
    "pgautofailover.health_check_timeout": 1000,
    "pgautofailover.health_check_max_retries": 1,
    "pgautofailover.health_check_retry_delay": 500,
    "pgautofailover.node_considered_unhealthy_timeout": 3000,
    "pgautofailover.primary_demote_timeout": 5000,   # the old primary is gone: wait 5 s, not 30, to promote
}
# Each node as the embedded cluster is configured (cluster.py), plus pg_auto_failover's pg_stat_statements.
NODE_CONF = {
    "shared_preload_libraries": "'pg_stat_statements,pg_cron,pg_partman_bgw'",
    "cron.database_name": "'postgres'",
    "cron.use_background_workers": "on",
    "cron.max_running_jobs": 16,
    "max_worker_processes": 40,
    "wal_level": "logical",
    "max_replication_slots": 20,
    "max_wal_senders": 20,
    "max_slot_wal_keep_size": "'1GB'",
    "wal_keep_size": "'256MB'",
    "max_connections": 300,
    "shared_buffers": "'128MB'",
    "effective_cache_size": "'1GB'",
    "maintenance_work_mem": "'64MB'",
    "password_encryption": "'scram-sha-256'",
    "synchronous_commit": "on",
}
# pg_autoctl's own roles log in without a password on loopback; every orchestrator role uses scram-sha-256
# (dblink from a service database needs the bus to ask for a password).
HBA = """# managed by orchestrator (infra/ha.py)
local   all           postgres                                trust
local   all           all                                     scram-sha-256
host    all           postgres                 127.0.0.1/32   trust
host    all           pgautofailover_monitor   127.0.0.1/32   trust
host    all           pgautofailover_replicator 127.0.0.1/32  trust
host    replication   pgautofailover_replicator 127.0.0.1/32  trust
host    all           all                      127.0.0.1/32   scram-sha-256
"""


@dataclass
class HaCluster:
    """Monitor + two nodes under `<state dir>/<name>/`, ports kept in `ha.json` there."""

    settings: Settings
    name: str = "ha"

    @property
    def base(self) -> Path:
        return tree_base(self.settings, self.name)

    @property
    def pointer(self) -> Path:
        return self.base / "ha.json"

    def ports(self) -> dict:
        if not self.pointer.exists():
            raise ClusterError("the HA bus is not created yet; run `orchestrator db start --ha`")
        return json.loads(self.pointer.read_text())["ports"]

    def pgdata(self, node: str) -> Path:
        return self.base / node

    # -- running pg_autoctl as the cluster user -------------------------------------------
    def _env(self) -> dict:
        bins = bindir(self.settings.pg_bindir)
        return {**os.environ, "XDG_CONFIG_HOME": str(self.base / "config"), "XDG_DATA_HOME": str(self.base / "share"),
                "PG_CONFIG": str(bins / "pg_config")}   # pg_autoctl finds pg_ctl, pg_basebackup, ... through it

    def autoctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(as_cluster_user(["pg_autoctl", *args]), capture_output=True, text=True,
                           env=self._env(), cwd=self.base, timeout=timeout)
        if check and r.returncode != 0:
            raise ClusterError(f"pg_autoctl {' '.join(args[:2])} failed: {(r.stderr or r.stdout).strip()[-2000:]}")
        return r

    def _spawn(self, node: str) -> None:
        """`pg_autoctl run` for NODE in its own session (so a kill reaches only it), logging to <node>.log."""
        if self.keeper_pid(node):
            return
        log = open(self.base / f"{node}.log", "ab")  # noqa: SIM115 - handed to the child
        p = subprocess.Popen(as_cluster_user(["pg_autoctl", "run", "--pgdata", str(self.pgdata(node))]),
                             stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.base,
                             start_new_session=True)
        (self.base / f"{node}.keeper.pid").write_text(str(p.pid))

    def keeper_pid(self, node: str) -> int | None:
        """The pid of NODE's `pg_autoctl run` (its session leader) when it is alive."""
        f = self.base / f"{node}.keeper.pid"
        if not f.exists():
            return None
        pid = int(f.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        try:
            with open(f"/proc/{pid}/stat") as st:
                if st.read().split(") ")[-1].startswith("Z"):
                    os.waitpid(pid, os.WNOHANG)
                    return None
        except (OSError, ChildProcessError):
            pass
        return pid

    def postmaster_pid(self, node: str) -> int | None:
        f = self.pgdata(node) / "postmaster.pid"
        try:
            return int(f.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- lifecycle -------------------------------------------------------------------------
    def _own(self, path: Path, text: str | None = None) -> None:
        if text is not None:
            path.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def _append_conf(self, node: str, conf: dict) -> None:
        self._own(self.pgdata(node) / "orchestrator.conf",
                  "# written by orchestrator (infra/ha.py)\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        main = self.pgdata(node) / "postgresql.conf"
        text = main.read_text()
        if "include_if_exists = 'orchestrator.conf'" not in text:   # last, so it wins over pg_autoctl's tuning
            self._own(main, text + "\ninclude_if_exists = 'orchestrator.conf'\n")

    def _pick_ports(self) -> dict:
        ports, p = {}, 57100 + int.from_bytes(str(self.base).encode()[-2:], "big") % 1500
        for name in ("monitor", *NODES):
            while not port_free(p) or p in ports.values():
                p += 1
            ports[name] = p
            p += 1
        return ports

    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.ports()['monitor']}/pg_auto_failover?sslmode=disable"

    def _create_node(self, node: str) -> None:
        self.autoctl("create", "postgres", "--pgdata", str(self.pgdata(node)), "--pgport", str(self.ports()[node]),
                     "--hostname", "127.0.0.1", "--name", node, "--no-ssl", "--skip-pg-hba",
                     "--dbname", "postgres", "--monitor", self.monitor_uri(),
                     "--pgctl", str(bindir(self.settings.pg_bindir) / "pg_ctl"), timeout=300)
        self._own(self.pgdata(node) / "pg_hba.conf", HBA)
        self._append_conf(node, NODE_CONF)

    def create(self) -> None:
        """Monitor, then the primary, then the secondary (a pg_basebackup of the primary); idempotent."""
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)  # under /var/lib/orchestrator when the checkout is closed to the cluster user
        self._own(self.base)
        if not self.pointer.exists():
            self.pointer.write_text(json.dumps({"ports": self._pick_ports()}))
        if not (self.pgdata("monitor") / "PG_VERSION").exists():
            self.autoctl("create", "monitor", "--pgdata", str(self.pgdata("monitor")), "--pgport",
                         str(self.ports()["monitor"]), "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl",
                         "--pgctl", str(bindir(self.settings.pg_bindir) / "pg_ctl"))
            self._append_conf("monitor", MONITOR_CONF)
        self._spawn("monitor")
        self.wait_ready("monitor")
        for i, node in enumerate(NODES):
            fresh = not (self.pgdata(node) / "PG_VERSION").exists()
            if fresh:
                self._create_node(node)
            self._spawn(node)
            if fresh:   # the secondary is a copy of a primary that is up and registered
                self.wait_states({"primary", "secondary"} if i else {"single"}, timeout=180)

    def start(self) -> None:
        """Create what is missing and start every `pg_autoctl run`; waits for a primary and a secondary."""
        self.create()
        self.wait_states({"primary", "secondary"}, timeout=180)

    def stop(self) -> None:
        """Stop the nodes, then the monitor (pg_autoctl stop: Postgres stopped cleanly)."""
        for node in (*NODES, "monitor"):
            pid = self.keeper_pid(node)
            if pid:
                self.autoctl("stop", "--pgdata", str(self.pgdata(node)), check=False)
                deadline = time.monotonic() + 60
                while self.keeper_pid(node) and time.monotonic() < deadline:
                    time.sleep(0.2)

    def destroy(self) -> None:
        """Stop everything (killing what does not stop) and delete the data."""
        self.stop()
        for node in (*NODES, "monitor"):
            self.kill(node)
        shutil.rmtree(self.base, ignore_errors=True)

    def kill(self, node: str) -> None:
        """kill -9 of NODE's postmaster and of its pg_autoctl (which would restart it in place): what losing
        the machine looks like to the others."""
        keeper, postmaster = self.keeper_pid(node), self.postmaster_pid(node)
        if keeper:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(keeper, signal.SIGKILL)
        if postmaster and "postgres" in _cmdline(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
        if keeper:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(keeper, 0)

    # -- state -------------------------------------------------------------------------------
    def wait_ready(self, node: str, timeout: float = 60) -> None:
        port = self.ports()[node]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run([str(bindir(self.settings.pg_bindir) / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise ClusterError(f"{node} is not accepting connections after {timeout}s; see {self.base / node}.log")

    def states(self) -> dict[str, tuple[str, str]]:
        """node name -> (reported state, assigned state), from the monitor."""
        r = self.autoctl("show", "state", "--pgdata", str(self.pgdata("monitor")), "--json", check=False, timeout=20)
        try:
            rows = json.loads(r.stdout or "[]")
        except json.JSONDecodeError:
            return {}
        return {n["nodename"]: (n["current_group_state"], n["assigned_group_state"]) for n in rows}

    def wait_states(self, want: set[str], timeout: float) -> dict:
        """Until the nodes' reported and assigned states are exactly WANT (e.g. {'primary', 'secondary'})."""
        deadline, st = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            st = self.states()
            if {r for r, a in st.values()} == want and all(r == a for r, a in st.values()):
                return st
            time.sleep(0.3)
        raise ClusterError(f"the HA nodes did not reach {sorted(want)} in {timeout}s: {st}; see {self.base}/*.log")

    def primary(self) -> str | None:
        """The node the monitor wants as primary and that reports being one (a dead node keeps reporting
        its last state; its assigned state says what the monitor made of it)."""
        for node, (reported, assigned) in self.states().items():
            if assigned in ("primary", "wait_primary", "single") and reported == assigned:
                return node
        return None

    # -- how to reach it ------------------------------------------------------------------
    def url(self, dbname: str, user: str | None = None) -> str:
        """A multi-host URL of DBNAME: libpq tries both nodes and keeps the one that takes writes."""
        hosts = ",".join(f"127.0.0.1:{self.ports()[n]}" for n in NODES)
        auth = f"{user}@" if user else ""
        return f"postgresql://{auth}{hosts}/{dbname}?target_session_attrs=read-write&connect_timeout=3"

    def env(self, databases: tuple[str, ...]) -> dict[str, str]:
        """The variables that put DATABASES on the pair (and its superuser URL for migrate)."""
        out = {f"{d.upper()}_DB_URL": self.url(d) for d in databases}
        out["DB_ADMIN_URLS"] = self.url("postgres", "postgres")
        return out
