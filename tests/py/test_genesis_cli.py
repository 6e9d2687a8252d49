"""`orchestrator genesis check|run|list|limits` as a user runs them."""

from __future__ import annotations

import json

from helpers import run_cli


def test_run_a_file_and_see_limits_applied(tmp_path, s):
    f = tmp_path / "loop.py"
    f.write_text("while True: pass\n")
    r = run_cli("genesis", "run", str(f), "--timeout", "1", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["killed_reason"] == "timeout" and out["limits"]["timeout_s"] == 1
    r = run_cli("genesis", "run", "-", "-l", "bash", "-m", "validate", input="if then\n")
    assert r.returncode == 1 and "exit code 2" in r.stderr
    r = run_cli("genesis", "run", "-", "--limit", "memory_mb=lots", input="print(1)")
    assert r.returncode == 1 and "expected NAME=NUMBER" in r.stderr


def test_limits_list_set_and_refusals(s):
    r = run_cli("genesis", "limits", check=True)
    assert "timeout_s" in r.stdout and "memory_mb" in r.stdout
    try:
        r = run_cli("genesis", "limits", "set", "timeout_s", "--default", "5", "--max", "30", check=True)
        assert "limit timeout_s: default 5, max 30" in r.stdout
        r = run_cli("genesis", "limits", "set", "timeout_s", "--default", "50", "--max", "30")
        assert r.returncode == 1 and "need 0 < default" in r.stderr
        r = run_cli("genesis", "limits", "set", "nope", "--default", "1", "--max", "2")
        assert r.returncode == 1 and "unknown limit nope (known: cpu_s" in r.stderr
    finally:
        run_cli("genesis", "limits", "set", "timeout_s", "--default", "10", "--max", "120", check=True)


def test_list_shows_recorded_executions(s):
    from orchestrator.infra.db import connect, owner_conninfo

    with connect(owner_conninfo(s, "genesis")) as c:
        c.execute("SELECT genesis.start_execution('cli-list-test', 'agent-x', 'python', 'run', 'sha', '{}', 'w', 5)")
        c.execute("""SELECT genesis.finish_execution('cli-list-test', '{"exit_code": 0, "duration_ms": 12}')""")
    try:
        r = run_cli("genesis", "list", check=True)
        assert "cli-list-test" in r.stdout and "agent-x" in r.stdout and "finished" in r.stdout
    finally:
        with connect(owner_conninfo(s, "genesis")) as c:
            c.execute("DELETE FROM genesis.executions WHERE request_id = 'cli-list-test'")
