"""Settings from the environment (names from the seeds); no I/O at import time."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.infra.settings import Env

# The five databases of the system, plus `postgres` where pg_cron lives.
DATABASES = ("shared_queue", "singularity", "genesis", "nexus", "centralcloud")

# Service LOGIN roles and the database each owns (besides shared_queue).
SERVICES = {
    "singularity": "svc_singularity",
    "genesis": "svc_genesis",
    "nexus": "svc_nexus",
    "centralcloud": "svc_centralcloud",
}


# Databases whose read-only reports may come from a replica of their own (<DB>_READ_DB_URL).
READ_REPLICA_DATABASES = ("centralcloud",)

# A Singularity instance id (`default` is the database singularity; X is singularity_X).
INSTANCE_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def owner_role(database: str) -> str:
    """The role that owns DATABASE and runs its migrations."""
    return f"own_{database}"


def project_root() -> Path:
    """The checkout this package runs from (where sql/ lives)."""
    env = os.environ.get("ORCHESTRATOR_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """What every part of the orchestrator reads from the environment (the bus, the server, the daemon's
    shared workers), read once by `settings()`; each service adds its own settings object."""

    root: Path = field(default_factory=project_root)
    shared_queue_enabled: bool = True
    poll_ms: int = 1000
    batch_size: int = 10
    retention_days: int = 90
    notify_throttle_ms: int = 0
    visibility_timeout_s: int = 30
    max_attempts: int | None = None        # None: each queue kind's own
    heartbeat_s: int = 15
    instance_id: str = "default"
    # External server (DESIGN section 9). Unset means the embedded cluster.
    db_host: str | None = None
    db_port: int | None = None
    db_user: str | None = None
    db_password: str | None = None
    db_urls: dict = field(default_factory=dict)   # database -> URL (SINGULARITY_DB_URL, ...)
    db_admin_urls: tuple = ()   # DB_ADMIN_URLS: one superuser URL per server, for migrate and doctor only
    read_urls: dict = field(default_factory=dict)  # database -> a read replica's URL (CENTRALCLOUD_READ_DB_URL)
    shared_queue_parts: dict = field(default_factory=dict)  # SHARED_QUEUE_HOST/PORT/USER/PASSWORD
    role_passwords: dict = field(default_factory=dict)      # role -> PGPASSWORD_<ROLE>
    secrets_file: Path | None = None
    pg_bindir: Path | None = None
    log_level: str = "INFO"
    log_json: bool = False
    alert_webhook: str | None = None
    alert_webhook_token: str | None = None
    alert_check_s: float = 30.0
    cold_storage_dir: Path | None = None   # None: <state dir>/cold-storage

    @classmethod
    def from_env(cls, env=None) -> Settings:
        """Read and check every variable once; SettingError (exit 2, with the fix) on a bad value."""
        e = Env(env)
        raw = e.env
        return cls(
            shared_queue_enabled=e.bool("SHARED_QUEUE_ENABLED", True),
            poll_ms=e.int("SHARED_QUEUE_POLL_MS", 1000, 10, 600_000, "the fallback poll interval in ms"),
            batch_size=e.int("SHARED_QUEUE_BATCH_SIZE", 10, 1, 1000, "the messages each worker reads at once"),
            retention_days=e.int("SHARED_QUEUE_RETENTION_DAYS", 90, 1, 36_500, "the days archives are kept"),
            notify_throttle_ms=e.int("SHARED_QUEUE_NOTIFY_THROTTLE_MS", 0, 0, 60_000, "pgmq's notify throttle in ms"),
            visibility_timeout_s=e.int("SHARED_QUEUE_VT_S", 30, 1, 86_400, "the visibility timeout of a read, in s"),
            max_attempts=(e.int("SHARED_QUEUE_MAX_ATTEMPTS", 5, 1, 1000, "the attempts before a dead letter")
                          if e.raw("SHARED_QUEUE_MAX_ATTEMPTS") else None),
            heartbeat_s=e.int("ORCHESTRATOR_HEARTBEAT_S", 15, 1, 3600, "the heartbeat period in s"),
            instance_id=e.str("ORCHESTRATOR_INSTANCE_ID", "default"),
            db_host=e.str("DB_HOST"), db_port=e.int("DB_PORT", 0, 0, 65535, "the server's port") or None,
            db_user=e.str("DB_USER"), db_password=e.str("DB_PASSWORD"),
            db_urls={d: raw[f"{d.upper()}_DB_URL"] for d in DATABASES if raw.get(f"{d.upper()}_DB_URL")},
            db_admin_urls=_admin_urls(raw.get("DB_ADMIN_URLS", "")),
            read_urls={d: raw[f"{d.upper()}_READ_DB_URL"] for d in READ_REPLICA_DATABASES
                       if raw.get(f"{d.upper()}_READ_DB_URL")},
            shared_queue_parts={k: raw[f"SHARED_QUEUE_{k.upper()}"] for k in ("host", "port", "user", "password")
                                if raw.get(f"SHARED_QUEUE_{k.upper()}")},
            role_passwords={k[len("PGPASSWORD_"):].lower(): v for k, v in raw.items()
                            if k.startswith("PGPASSWORD_") and v},
            secrets_file=Path(raw["ORCHESTRATOR_SECRETS_FILE"]) if raw.get("ORCHESTRATOR_SECRETS_FILE") else None,
            pg_bindir=Path(raw["ORCHESTRATOR_PG_BINDIR"]) if raw.get("ORCHESTRATOR_PG_BINDIR") else None,
            log_level=e.choice("ORCHESTRATOR_LOG_LEVEL", "info", LOG_LEVELS, "the log level").upper(),
            log_json=e.bool("ORCHESTRATOR_LOG_JSON", False),
            alert_webhook=e.str("ORCHESTRATOR_ALERT_WEBHOOK"),
            alert_webhook_token=e.str("ORCHESTRATOR_ALERT_WEBHOOK_TOKEN"),
            alert_check_s=e.float("ORCHESTRATOR_ALERT_CHECK_S", 30.0, 1, 86_400, "how often alerts are evaluated, in s"),
            cold_storage_dir=(Path(raw["SHARED_QUEUE_COLD_STORAGE_DIR"]).expanduser()
                              if raw.get("SHARED_QUEUE_COLD_STORAGE_DIR") else None),
        )

    @property
    def state_dir(self) -> Path:
        """Git-ignored per-checkout state: secrets file, cluster pointer."""
        return self.root / ".state"

    @property
    def cold_dir(self) -> Path:
        """Where archive rows past retention are exported (SHARED_QUEUE_COLD_STORAGE_DIR)."""
        return self.cold_storage_dir or self.state_dir / "cold-storage"

    @property
    def sql_dir(self) -> Path:
        return self.root / "sql"

    def database_url_override(self, database: str) -> str | None:
        """A full URL set for DATABASE (e.g. SHARED_QUEUE_DB_URL), or None. An extra Singularity instance's
        database (singularity_<id>) lives where SINGULARITY_DB_URL points, under its own name."""
        if database in self.db_urls:
            return self.db_urls[database]
        if database.startswith("singularity_") and "singularity" in self.db_urls:
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            return make_conninfo(**{**conninfo_to_dict(self.db_urls["singularity"]), "dbname": database})
        parts = self.shared_queue_parts
        if database == "shared_queue" and parts.get("host"):
            from psycopg.conninfo import make_conninfo

            return make_conninfo(host=parts["host"], port=parts.get("port", "5432"), user=parts.get("user", ""),
                                 password=parts.get("password", ""), dbname="shared_queue")
        return None

    def server(self, database: str) -> str | None:
        """The server DATABASE lives on, as 'host:port' of its URL (multi-host URLs keep their lists, e.g.
        'h1,h2:5432,5432'); None for the default server (DB_HOST/DB_PORT, or the embedded cluster).
        `postgres` (pg_cron's database, one per server) means the bus's server."""
        url = self.database_url_override("shared_queue" if database == "postgres" else database)
        key = server_key(url) if url else None
        if self.db_host and key == f"{self.db_host}:{self.db_port or 5432}":
            return None   # the DB_HOST server, named another way: one server, migrated once
        return key

    def servers(self, databases) -> dict:
        """server key (or None) -> the DATABASES on it, in the order given."""
        out: dict = {}
        for d in databases:
            out.setdefault(self.server(d), []).append(d)
        return out

    def admin_url(self, server: str | None) -> str | None:
        """The DB_ADMIN_URLS entry for SERVER (a key from server()), or None."""
        for url in self.db_admin_urls:
            if server_key(url) == server:
                return url
        return None

    @property
    def default_server(self) -> tuple[str, int]:
        """Host and port of the external server for databases without a URL of their own: DB_HOST/DB_PORT, else
        where the bus is (SHARED_QUEUE_DB_URL or SHARED_QUEUE_HOST/PORT), else localhost:5432."""
        if self.db_host:
            return self.db_host, self.db_port or 5432
        bus = self.database_url_override("shared_queue")
        if bus:
            from psycopg.conninfo import conninfo_to_dict

            d = conninfo_to_dict(bus)
            host = str(d.get("host") or "localhost").split(",")[0]
            port = str(d.get("port") or "5432").split(",")[0]
            return host, int(port) if port.isdigit() else 5432
        return "localhost", self.db_port or 5432

    @property
    def external(self) -> bool:
        """True when a server is configured by env, so no embedded cluster is managed."""
        return bool(self.db_host or self.db_urls.get("shared_queue") or self.shared_queue_parts.get("host"))


def server_key(url: str) -> str:
    """'host:port' of a URL or conninfo (the default port 5432 spelled out), used to match servers."""
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(url)
    hosts = str(d.get("host") or "localhost")
    ports = str(d.get("port") or ",".join("5432" for _ in hosts.split(",")))
    return f"{hosts}:{ports}"


def _admin_urls(raw: str) -> tuple:
    """DB_ADMIN_URLS: URLs separated by white space (a multi-host URL has commas of its own)."""
    return tuple(raw.split())


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def settings() -> Settings:
    """The shared settings, read from the environment now."""
    return Settings.from_env()
