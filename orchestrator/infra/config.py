"""Settings from the environment (names from the seeds); no I/O at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The five databases of the system, plus `postgres` where pg_cron lives.
DATABASES = ("shared_queue", "singularity", "genesis", "nexus", "centralcloud")

# Service LOGIN roles and the database each owns (besides shared_queue).
SERVICES = {
    "singularity": "svc_singularity",
    "genesis": "svc_genesis",
    "nexus": "svc_nexus",
    "centralcloud": "svc_centralcloud",
}


def owner_role(database: str) -> str:
    """The role that owns DATABASE and runs its migrations."""
    return f"own_{database}"


def project_root() -> Path:
    """The checkout this package runs from (where sql/ lives)."""
    env = os.environ.get("ORCHESTRATOR_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer; set it to a whole number or unset it") from None


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    return raw in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Everything the orchestrator reads from the environment."""

    root: Path = field(default_factory=project_root)
    shared_queue_enabled: bool = field(default_factory=lambda: _bool("SHARED_QUEUE_ENABLED", True))
    poll_ms: int = field(default_factory=lambda: _int("SHARED_QUEUE_POLL_MS", 1000))
    batch_size: int = field(default_factory=lambda: _int("SHARED_QUEUE_BATCH_SIZE", 10))
    retention_days: int = field(default_factory=lambda: _int("SHARED_QUEUE_RETENTION_DAYS", 90))
    notify_throttle_ms: int = field(default_factory=lambda: _int("SHARED_QUEUE_NOTIFY_THROTTLE_MS", 0))
    visibility_timeout_s: int = field(default_factory=lambda: _int("SHARED_QUEUE_VT_S", 30))
    max_attempts: int = field(default_factory=lambda: _int("SHARED_QUEUE_MAX_ATTEMPTS", 5))
    heartbeat_s: int = field(default_factory=lambda: _int("ORCHESTRATOR_HEARTBEAT_S", 15))
    instance_id: str = field(default_factory=lambda: os.environ.get("ORCHESTRATOR_INSTANCE_ID", "default"))
    # External server (DESIGN section 9). Unset means the embedded cluster.
    db_host: str | None = field(default_factory=lambda: os.environ.get("DB_HOST") or None)
    db_port: int | None = field(default_factory=lambda: _int("DB_PORT", 0) or None)
    db_user: str | None = field(default_factory=lambda: os.environ.get("DB_USER") or None)
    db_password: str | None = field(default_factory=lambda: os.environ.get("DB_PASSWORD") or None)

    @property
    def state_dir(self) -> Path:
        """Git-ignored per-checkout state: secrets file, cluster pointer."""
        return self.root / ".state"

    @property
    def sql_dir(self) -> Path:
        return self.root / "sql"

    def database_url_override(self, database: str) -> str | None:
        """A full URL set for DATABASE (e.g. SHARED_QUEUE_DB_URL), or None."""
        url = os.environ.get(f"{database.upper()}_DB_URL")
        if url:
            return url
        if database == "shared_queue" and os.environ.get("SHARED_QUEUE_HOST"):
            from psycopg.conninfo import make_conninfo

            return make_conninfo(
                host=os.environ["SHARED_QUEUE_HOST"],
                port=os.environ.get("SHARED_QUEUE_PORT", "5432"),
                user=os.environ.get("SHARED_QUEUE_USER", ""),
                password=os.environ.get("SHARED_QUEUE_PASSWORD", ""),
                dbname="shared_queue",
            )
        return None

    @property
    def external(self) -> bool:
        """True when a server is configured by env, so no embedded cluster is managed."""
        return bool(self.db_host or os.environ.get("SHARED_QUEUE_DB_URL") or os.environ.get("SHARED_QUEUE_HOST"))


def settings() -> Settings:
    return Settings()
