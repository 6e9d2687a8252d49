"""Chaos: the data directory fills up. Clear errors, no crash loop, committed messages intact after."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from orchestrator.core.bus import Bus, BusError
from orchestrator.infra.cluster import Cluster
from orchestrator.infra.config import settings
from orchestrator.infra.db import connect, owner_conninfo, role_conninfo
from orchestrator.infra.migrate import Target, migrate

pytestmark = pytest.mark.chaos


def _mount_tmpfs(path: Path, size_mb: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)], check=True)


@pytest.fixture
def small_cluster():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    root = Path(tempfile.mkdtemp(prefix="orch-diskfull-", dir="/tmp"))
    os.chmod(root, 0o755)
    (root / "sql").symlink_to(settings().sql_dir)
    state = root / ".state"
    state.mkdir(mode=0o755)
    mnt = state / "cluster"
    mnt.mkdir()
    _mount_tmpfs(mnt, 160)
    s = replace(settings(), root=root)
    c = Cluster(s)
    try:
        c.start()
        migrate(s, progress=lambda _m: None, only=[Target("shared_queue", "shared_queue"), Target("postgres", "postgres")])
        yield s, c, mnt
    finally:
        try:
            c.stop("immediate")
        except Exception:  # noqa: BLE001 - the server may already be down
            pass
        subprocess.run(["umount", "-l", str(mnt)])
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(c.socket_dir, ignore_errors=True)


def test_disk_full_gives_clear_errors_and_keeps_committed_messages(small_cluster):
    s, c, mnt = small_cluster
    bus = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=1)
    committed: list[int] = []
    errors: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(errors) < 5:
        body = {"agent_id": "filler", "task_type": "bulk", "messages": [{"role": "user",
                "content": base64.b64encode(os.urandom(150_000)).decode()}]}  # incompressible
        try:
            committed.append(bus.publish("llm_requests", body))
        except (BusError, psycopg.Error) as e:
            errors.append(str(e))
            time.sleep(0.5)
    bus.close()
    assert errors, "the disk never filled"
    assert any("out of disk space" in e and "Nothing was enqueued" in e for e in errors), errors
    assert len(committed) > 50
    # space returns: grow the tmpfs, then the server must be up (restarted once if it stopped) with every
    # message whose publish returned an id
    subprocess.run(["mount", "-o", "remount,size=1024m", str(mnt)], check=True)
    if not c.running():
        c.start()
    c.wait_ready(60)
    with connect(owner_conninfo(s, "shared_queue")) as conn:
        ids = {r["msg_id"] for r in conn.execute("SELECT msg_id FROM pgmq.q_llm_requests")}
    missing = set(committed) - ids
    assert not missing, f"{len(missing)} committed messages lost"
    # and it works again
    with Bus(role_conninfo(s, "shared_queue", "svc_singularity"), pool_size=1) as b:
        assert b.publish("llm_requests", {"agent_id": "after", "task_type": "t", "messages": [1]}) > 0
    # no crash loop: the server log shows at most one crash-recovery cycle
    log = c.log_file.read_text(errors="replace")
    assert log.count("database system was interrupted") <= 2, log[-2000:]
