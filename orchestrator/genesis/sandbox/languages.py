"""What each language runs for each mode inside the sandbox (paths as seen inside it)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MODES = ("run", "validate", "lint")
ALIASES = {"py": "python", "python3": "python", "js": "javascript", "node": "javascript", "nodejs": "javascript",
           "sh": "bash", "shell": "bash", "ex": "elixir", "exs": "elixir", "rs": "rust"}
SUPPORTED = "python, javascript (node), bash, elixir, rust"
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
    error_line: str | None = None             # regex: the first matching output line is the result's error text
                                              # (a compiler's first error, not its last line "aborting ...")
    limit_note: str | None = None             # added to the error when memory, cpu or processes stopped the job


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
    if lang in ("elixir", "rust"):
        return (elixir if lang == "elixir" else rust)(mode, memory_mb)
    raise Unsupported(f"unknown language {language!r}; supported: {SUPPORTED} "
                      f"(aliases: {', '.join(sorted(ALIASES))}); modes: {', '.join(MODES)}")


# Elixir lint: compiler warnings and the formatter, without running the script. Modules are compiled (their
# bodies run, as in any Elixir compile); the script's top-level code is compiled inside a function that is
# never called, so its warnings (unused variables, undefined functions) are reported but nothing of it runs.
# Exit 1 when the formatter would change the file; warnings are counted by the shell around it.
ELIXIR_LINT = """src = File.read!("main.exs")
forms = case Code.string_to_quoted!(src, file: "main.exs", columns: true) do
  {:__block__, _, fs} -> fs
  f -> [f]
end
{mods, script} = Enum.split_with(forms, fn
  {d, _, _} when d in [:defmodule, :defprotocol, :defimpl] -> true
  _ -> false
end)
body = {:def, [line: 1], [{:__script__, [line: 1], []}, [do: {:__block__, [], script ++ [nil]}]]}
Code.compile_quoted({:__block__, [], mods ++ [{:defmodule, [line: 1],
  [{:__aliases__, [line: 1], [:GenesisLintScript]}, [do: body]]}]}, "main.exs")
want = IO.iodata_to_binary(Code.format_string!(src)) <> "\\n"
if want != src do
  got = String.split(src, "\\n")
  exp = String.split(want, "\\n")
  n = Enum.zip(got ++ [nil], exp ++ [nil]) |> Enum.find_index(fn {a, b} -> a != b end)
  IO.puts("main.exs:#{n + 1}: not formatted as `mix format` writes it; expected: #{inspect(Enum.at(exp, n))}")
  System.halt(1)
end
"""
# warnings make the lint fail (exit 1), all findings on stdout as the other linters print them
ELIXIR_LINT_SH = ('out=$(/usr/bin/elixir .genesis_lint.exs 2>&1); s=$?; [ -n "$out" ] && printf "%s\\n" "$out"; '
                  '[ $s -ne 0 ] && exit $s; case $out in *"warning: "*) exit 1;; esac; echo "no findings"')
ELIXIR_ERROR = r"^\*\* \("                               # ** (CompileError) main.exs:3: ..., ** (RuntimeError) ...
RUST_ERROR = r"^(error(\[E\d+\])?: (?!aborting)|thread '.*' panicked at )"
RUSTC = "/usr/bin/rustc"
RUST_NOTE = ("rustc compiles inside the job, so the compile counts against memory_mb, cpu_s, processes and "
             "timeout_s: a hello world needs about 60 MB, 14 processes/threads and 0.2 s to compile, larger programs more")
ELIXIR_NOTE = "the Erlang VM itself takes about 40 MB, 18 processes/threads and 0.4 s of CPU of them to start"
ELIXIR = "/usr/bin/elixir"


def elixir(mode: str, memory_mb: int) -> Command:
    """`elixir main.exs`; validate: the parser (syntax only, nothing runs); lint: compiler warnings + formatter."""
    if not os.path.exists(ELIXIR):
        raise Unsupported("elixir is not installed: apt-get install elixir (Debian package elixir, with Erlang); "
                          f"supported here: {_installed()}")
    # The Erlang VM reserves address space up front: its literal area alone is 1 GB by default (+MIscs 128
    # makes it 128 MB) and its JIT more; the job's real memory is still held to memory_mb by its cgroup.
    # Fewer dirty I/O schedulers: 8 threads fewer against the processes limit (it still needs ~18 processes and
    # threads in all). No crash dump in /work.
    kw = {"extra_as_mb": 512, "error_line": ELIXIR_ERROR, "limit_note": ELIXIR_NOTE,
          "env": (("ELIXIR_ERL_OPTIONS", "+MIscs 128 +SDio 2"), ("ERL_CRASH_DUMP_SECONDS", "0"),
                  ("MALLOC_ARENA_MAX", "2"))}  # 2 malloc arenas, not 64 MB reserved per thread
    if mode == "run":
        return Command([ELIXIR, "main.exs"], "main.exs", **kw)
    if mode == "validate":
        return Command([ELIXIR, "-e", 'Code.string_to_quoted!(File.read!("main.exs"), file: "main.exs"); '
                        'IO.puts("syntax ok")'], "main.exs", **kw)
    kw["error_line"] = r"^(\*\* \(|warning: |main\.exs:\d+: not formatted)"  # a finding, not "no findings"
    return Command(["/usr/bin/bash", "-c", ELIXIR_LINT_SH], "main.exs", files=((".genesis_lint.exs", ELIXIR_LINT),),
                   **kw)


def rust(mode: str, memory_mb: int) -> Command:
    """rustc compiles main.rs inside the sandbox (the compile counts against the job's limits), then the binary
    runs; validate: `rustc --emit=metadata` (parse, types, borrows; no code generated); lint: rustc's warnings
    as errors (clippy is not packaged with Debian's rustc)."""
    if not os.path.exists(RUSTC):
        raise Unsupported("rust is not installed: apt-get install rustc (Debian package rustc; /usr/bin/rustc, "
                          f"a rustup toolchain in a home directory is not visible in the sandbox); supported here: "
                          f"{_installed()}")
    base = [RUSTC, "--edition", "2021", "--crate-name", "main"]
    # fewer malloc arenas: less address space reserved per compiler thread
    kw = {"extra_as_mb": 512, "env": (("MALLOC_ARENA_MAX", "2"),), "error_line": RUST_ERROR, "limit_note": RUST_NOTE}
    if mode == "validate":
        return Command([*base, "--emit=metadata", "-o", "/work/main.rmeta", "main.rs"], "main.rs", **kw)
    if mode == "lint":
        return Command(["/usr/bin/bash", "-c", " ".join([*base, "--emit=metadata", "-o", "/work/main.rmeta", "-D",
                                                         "warnings", "-W", "rust-2018-idioms", "-W",
                                                         "unused-qualifications", "main.rs", "2>&1"])],
                       "main.rs", **kw)
    cc = os.path.realpath(shutil.which("cc", path="/usr/bin") or "/usr/bin/cc")
    if not cc.startswith("/usr/bin/") or not os.access(cc, os.X_OK):
        raise Unsupported("rust needs a C linker for rustc (cc: Debian package gcc, a dependency of rustc); "
                          "mode validate works without it")
    # warnings are for lint: the job's stderr is the compiler's errors, then the program's own
    build = " ".join([*base, "-A", "warnings", "-C", "strip=debuginfo", "-C", f"linker={cc}", "-o", "/work/main",
                      "main.rs"])
    return Command(["/usr/bin/bash", "-c", f"{build} || exit $?; exec /work/main"], "main.rs", **kw)


PACKAGES = {"javascript": "nodejs", "elixir": "elixir", "rust": "rustc"}  # the Debian package of each runtime


def installed() -> list[str]:
    """The supported languages whose runtime is on this machine."""
    found = {"javascript": os.path.exists("/usr/bin/node"), "elixir": os.path.exists(ELIXIR),
             "rust": os.path.exists(RUSTC)}
    return ["python", "bash"] + [lang for lang, ok in found.items() if ok]


def _installed() -> str:
    return ", ".join(installed())
