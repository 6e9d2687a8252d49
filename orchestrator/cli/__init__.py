"""The `orchestrator` command: one click group (main) with a group per service."""

from orchestrator.cli.main import main, run

__all__ = ["main", "run"]
