"""Every user mistake the CLI meets prints what was wrong and the fix and exits non-zero, never a traceback
(issue 16): a stopped cluster, a dead server named by SHARED_QUEUE_DB_URL, bad settings, a plot file that
cannot be written, values the nexus database refuses."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from helpers import ROOT, run_cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused(r, *words: str) -> str:
    """R exited non-zero with every one of WORDS in its output and no traceback; returns the output."""
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    for w in words:
        assert w.lower() in out.lower(), f"{w!r} missing from:\n{out}"
    return out


@pytest.fixture(scope="module")
def stopped_home(tmp_path_factory, s):
    """A checkout whose embedded cluster is stopped: its pointer names a port nothing listens on and a data
    directory that is not there (the real cluster keeps running for the other tests)."""
    home = tmp_path_factory.mktemp("stopped")
    (home / ".state").mkdir()
    shutil.copy(ROOT / ".state" / "secrets.env", home / ".state" / "secrets.env")
    port = free_port()
    (home / ".state" / "cluster.json").write_text(json.dumps(
        {"base": str(home / "cluster"), "port": port, "socket_dir": str(home / "run")}))
    (home / "sql").symlink_to(ROOT / "sql")
    return {"ORCHESTRATOR_HOME": str(home), "_port": str(port)}


@pytest.mark.parametrize("args", [("status",), ("queues",), ("alerts",), ("read", "llm_requests"),
                                  ("demo", "--timeout", "5"), ("dlq", "list"), ("nexus", "calls"), ("stats",),
                                  ("send", "llm_requests", "{}"), ("dlq", "replay", "1"), ("instance", "list"),
                                  ("genesis", "list"), ("centralcloud", "run", "statistics"),
                                  ("autonomous", "queue-status")])
def test_a_stopped_cluster_is_named_with_the_fix(stopped_home, args):
    env = {k: v for k, v in stopped_home.items() if not k.startswith("_")}
    r = run_cli(*args, env=env, timeout=60)
    refused(r, f"127.0.0.1:{stopped_home['_port']}", "make db")


@pytest.mark.parametrize("args", [("migrate",), ("migrate", "status")])
def test_migrate_with_a_stopped_cluster_names_the_socket_and_the_fix(stopped_home, args):
    env = {k: v for k, v in stopped_home.items() if not k.startswith("_")}
    refused(run_cli(*args, env=env, timeout=60), f".s.PGSQL.{stopped_home['_port']}", "make db")


def test_the_daemon_says_once_at_start_that_the_database_is_down(stopped_home):
    import os
    import subprocess
    import sys

    env = {**os.environ, **{k: v for k, v in stopped_home.items() if not k.startswith("_")}}
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "daemon", "--only", "nexus"], cwd=ROOT, env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        first = p.stderr.readline()
    finally:
        p.kill()
        p.wait()
    assert "ERROR" in first and f"127.0.0.1:{stopped_home['_port']}" in first and "make db" in first, first
    assert "keep trying" in first


@pytest.mark.parametrize("args", [("status",), ("queues",), ("read", "llm_requests"), ("demo", "--timeout", "5")])
def test_a_dead_server_in_the_url_is_named_by_its_own_port(s, args):
    port = free_port()
    r = run_cli(*args, env={"SHARED_QUEUE_DB_URL": f"postgresql://own_shared_queue:x@127.0.0.1:{port}/shared_queue"},
                timeout=60)
    out = refused(r, f"127.0.0.1:{port}", "SHARED_QUEUE_DB_URL")
    assert "5432" not in out, out  # every database goes where the bus is unless DB_HOST says otherwise


LOG_LEVEL = ({"ORCHESTRATOR_LOG_LEVEL": "verbose"}, ["ORCHESTRATOR_LOG_LEVEL", "verbose", "debug, info"])
WEB_PORT = ({"NEXUS_WEB_PORT": "99999"}, ["NEXUS_WEB_PORT", "99999", "between 0 and 65535"])
BATCH = ({"SHARED_QUEUE_BATCH_SIZE": "lots"}, ["SHARED_QUEUE_BATCH_SIZE", "whole number"])
DAEMON, DEMO = ("daemon", "--only", "hitl"), ("demo", "--timeout", "5")


@pytest.mark.parametrize("setting,args", [(LOG_LEVEL, ("queues",)), (LOG_LEVEL, DAEMON), (LOG_LEVEL, DEMO),
                                          (WEB_PORT, DAEMON), (WEB_PORT, DEMO), (BATCH, ("queues",)),
                                          (BATCH, DAEMON), (BATCH, DEMO)])
def test_a_bad_setting_is_named_with_the_fix(s, setting, args):
    env, words = setting
    refused(run_cli(*args, env=env, timeout=60), *words)


def test_a_bad_log_level_option(s):
    refused(run_cli("--log-level", "loud", "queues"), "--log-level", "loud", "debug, info")


@pytest.mark.parametrize("name,words", [("missing-folder/x.png", ["does not exist", "mkdir"]),
                                        ("stats.txt", [".txt", ".png"]), ("stats", ["no extension", ".png"])])
def test_stats_plot_to_a_file_that_cannot_be_written(s, tmp_path, name, words):
    refused(run_cli("stats", "--no-refresh", "--plot", str(tmp_path / name)), *words)


@pytest.mark.parametrize("args,words", [
    (("nexus", "budget", "set", "t16_agent", "--tokens", "-5"), ["-5 tokens", "--tokens 0 or more"]),
    (("nexus", "budget", "set", "t16_agent", "--cost", "-1"), ["negative", "--cost 0 or more"]),
    (("nexus", "providers", "set", "t16p", "--kind", "openai"), ["needs a base URL", "--base-url"]),
    (("nexus", "providers", "set", "t16p", "--kind", "openai", "--base-url", "nope"), ["not an http(s) URL"]),
    (("nexus", "providers", "set", "t16p", "--kind", "offline", "--timeout", "-1"), ["not positive", "--timeout"]),
    (("nexus", "providers", "set", "t16p", "--kind", "offline", "--retries", "50"), ["out of range", "--retries"]),
    (("nexus", "providers", "set", "T16 P", "--kind", "offline"), ["not allowed", "lower-case"]),
    (("nexus", "providers", "set", "t16p", "--kind", "offline", "--key-env", "sk-123"), ["NAME of the variable"]),
    (("nexus", "models", "set", "t16m", "--provider", "no_such"), ["does not exist", "providers set"]),
    (("nexus", "routes", "set", "t16", "no_such_model"), ["unknown model", "models set"]),
])
def test_refused_nexus_settings_say_why_not_the_constraint(s, args, words):
    out = refused(run_cli(*args), *words)
    assert "constraint" not in out and "_check" not in out and "_fkey" not in out, out

