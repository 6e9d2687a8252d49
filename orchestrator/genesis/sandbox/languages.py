"""What each language runs for each mode inside the sandbox (paths as seen inside it)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MODES = ("run", "validate", "lint")
ALIASES = {"py": "python", "python3": "python", "js": "javascript", "node": "javascript", "nodejs": "javascript",
           "sh": "bash", "shell": "bash"}
RUFF_IN_SANDBOX = "/opt/genesis/ruff"
ESLINT = "/usr/share/nodejs/eslint/bin/eslint.js"
ESLINT_CONFIG = ('{"root": true, "extends": "eslint:recommended", "env": {"node": true, "es2020": true}, '
                 '"parserOptions": {"ecmaVersion": 2020, "sourceType": "script"}}')


@dataclass(frozen=True)
class Command:
    argv: list[str]
    filename: str
    binds: tuple[tuple[str, str], ...] = ()   # (host path, sandbox path) bound read-only
    extra_as_mb: int = 0                      # address space the runtime reserves beyond the program's own
    env: tuple[tuple[str, str], ...] = ()     # extra environment inside the sandbox
    files: tuple[tuple[str, str], ...] = ()   # extra files (name in /work, content), e.g. a linter config


class Unsupported(Exception):
    """Unknown language or mode, or its tool is missing on this machine; the message lists what works."""


_staged: dict[str, str] = {}


def _open_to_all(path: str) -> bool:
    """Can any uid read and run PATH (every parent directory searchable by others)?"""
    p = Path(path).resolve()
    if p.stat().st_mode & 0o005 != 0o005:
        return False
    return all(d.stat().st_mode & 0o001 for d in p.parents)


def _staged_copy(path: str) -> str:
    """PATH itself if every uid can reach it, else a copy in a private 0755 temp directory (once per process):
    bwrap binds it as the job's unprivileged uid, which may not enter the checkout (e.g. a 0700 CI folder)."""
    if _open_to_all(path):
        return path
    if path not in _staged:
        import atexit
        import tempfile

        d = tempfile.mkdtemp(prefix="orchestrator-genesis-tools-")
        os.chmod(d, 0o755)
        dst = os.path.join(d, os.path.basename(path))
        shutil.copy2(path, dst)
        os.chmod(dst, 0o755)
        atexit.register(shutil.rmtree, d, True)
        _staged[path] = dst
    return _staged[path]


def _ruff(configured: str | None = None) -> str | None:
    cand = [configured, str(Path(sys.executable).parent / "ruff"), shutil.which("ruff")]
    found = next((c for c in cand if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)
    return _staged_copy(found) if found else None


def command(language: str, mode: str, memory_mb: int, *, python: str = "/usr/bin/python3",
            ruff: str | None = None) -> Command:
    """The argv for LANGUAGE/MODE, or Unsupported saying what is supported."""
    lang = ALIASES.get((language or "").lower(), (language or "").lower())
    if mode not in MODES:
        raise Unsupported(f"unknown mode {mode!r}; supported modes: {', '.join(MODES)}")
    if lang == "python":
        py = python
        if not os.path.exists(py):
            raise Unsupported(f"python interpreter {py} is missing: install python3 or set GENESIS_PYTHON")
        if mode == "run":
            return Command([py, "-u", "main.py"], "main.py")
        if mode == "validate":
            return Command([py, "-c", "import sys; src = open(sys.argv[1], 'rb').read(); "
                            "compile(src, sys.argv[1], 'exec'); print('syntax ok')", "main.py"], "main.py")
        ruff = _ruff(ruff)
        if not ruff:
            raise Unsupported("python lint needs ruff (pip install ruff, or set GENESIS_RUFF to its path)")
        return Command([RUFF_IN_SANDBOX, "check", "--no-cache", "--isolated", "--output-format", "concise",
                        "main.py"], "main.py", binds=((ruff, RUFF_IN_SANDBOX),))
    if lang == "javascript":
        node = shutil.which("node", path="/usr/bin:/usr/local/bin") or ""
        if not node.startswith("/usr/"):
            raise Unsupported("javascript needs node under /usr (Debian package nodejs); "
                              "supported here: python, bash")
        if mode == "run":
            # V8 reserves ~1 GB of address space up front; the heap itself is held to memory_mb.
            return Command([node, f"--max-old-space-size={max(16, memory_mb)}", "main.js"], "main.js",
                           extra_as_mb=1024)
        if mode == "validate":
            return Command([node, "--check", "main.js"], "main.js", extra_as_mb=1024)
        if not os.path.isfile(ESLINT):
            raise Unsupported("javascript lint needs eslint (Debian package eslint, under /usr/share/nodejs); "
                              "use mode validate (node --check) meanwhile")
        return Command([node, ESLINT, "--format", "unix", "main.js"], "main.js", extra_as_mb=1024,
                       binds=(("/usr/share/nodejs", "/usr/share/nodejs"),),
                       env=(("NODE_PATH", "/usr/share/nodejs:/usr/lib/nodejs"),),
                       files=((".eslintrc.json", ESLINT_CONFIG),))
    if lang == "bash":
        if mode == "run":
            return Command(["/usr/bin/bash", "main.sh"], "main.sh")
        if mode == "validate":
            return Command(["/usr/bin/bash", "-n", "main.sh"], "main.sh")
        sc = shutil.which("shellcheck", path="/usr/bin")
        if not sc:
            raise Unsupported("bash lint needs shellcheck (apt-get install shellcheck); use mode validate (bash -n)")
        return Command([sc, "--format", "gcc", "--shell", "bash", "main.sh"], "main.sh")
    raise Unsupported(f"unknown language {language!r}; supported: python, javascript (node), bash "
                      f"(aliases: {', '.join(sorted(ALIASES))}); modes: {', '.join(MODES)}")
