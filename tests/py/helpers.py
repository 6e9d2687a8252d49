"""Helpers shared by tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORCH = [sys.executable, "-m", "orchestrator.cli"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `orchestrator ARGS...` in a subprocess (as a user would)."""
    r = subprocess.run([*ORCH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env={**os.environ, **(env or {})}, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"orchestrator {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r
