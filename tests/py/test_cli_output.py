"""The CLI's output: tables through one helper (tabulate), --json on every command that prints a table,
--version from the package's metadata."""

from __future__ import annotations

import inspect
import json

import click
import pytest

from helpers import run_cli
from orchestrator.cli.main import main

TABLE_COMMANDS = [
    ("queues",), ("read", "instance_heartbeat", "--archive", "--limit", "2"), ("dlq", "list"),
    ("centralcloud", "jobs"), ("centralcloud", "patterns"), ("centralcloud", "packages"),
    ("centralcloud", "instances"), ("centralcloud", "templates"), ("centralcloud", "exports"),
    ("stats", "--no-refresh", "--days", "2"), ("instance", "list"), ("genesis", "list"), ("genesis", "limits"),
    ("nexus", "providers"), ("nexus", "models"), ("nexus", "routes"), ("nexus", "budget"), ("nexus", "calls"),
    ("autonomous", "queue-status"), ("autonomous", "jobs-status"),
]


def commands(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command) for every command and group under GROUP."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))


def test_every_command_that_prints_a_table_takes_json():
    missing = []
    for path, cmd in commands(main):
        source = inspect.getsource(inspect.unwrap(cmd.callback)) if cmd.callback else ""
        if ("table(" in source or "_show(" in source) and "--json" not in [o for p in cmd.params for o in p.opts]:
            missing.append(" ".join(path))
    assert not missing, f"commands printing a table without --json: {missing}"


@pytest.mark.parametrize("args", TABLE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_json_output_is_json_only(s, args):
    r = run_cli(*args, "--json", check=True)
    doc = json.loads(r.stdout)  # nothing else on stdout: no titles, no "(none)"
    assert isinstance(doc, list | dict)
    rows = doc if isinstance(doc, list) else [row for table in doc.values() for row in table]
    assert all(isinstance(row, dict) for row in rows)


def test_json_of_a_table_has_its_columns_and_typed_values(s):
    doc = json.loads(run_cli("genesis", "limits", "--json", check=True).stdout)
    assert doc and set(doc[0]) == {"name", "default_value", "max_value", "unit", "description"}
    assert isinstance(doc[0]["max_value"], int | float)
    stats = json.loads(run_cli("stats", "--no-refresh", "--json", check=True).stdout)
    assert {"messages", "latency", "llm"} <= set(stats)


def test_text_tables_are_aligned_by_tabulate(s):
    from tabulate import tabulate

    out = run_cli("genesis", "limits", check=True).stdout.splitlines()
    header, rule = out[0], out[1]
    assert header.split() == ["name", "default_value", "max_value", "unit", "description"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert tabulate([["a"]], headers=["x"]).splitlines()[1].strip("- ") == ""  # the same rule style


def test_version(s):
    from importlib.metadata import version

    for flag in ("--version", "-V"):
        r = run_cli(flag, check=True)
        assert r.stdout.strip() == f"orchestrator {version('orchestrator')}"
