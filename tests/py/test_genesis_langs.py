"""Genesis's Elixir and Rust (seed 002) end to end through the real worker and real bwrap: output in every mode,
compile errors reported with the compiler's message, lint findings, the time, CPU and memory limits (the Rust
compile counting against them), no network; and what a machine without them is told."""

from __future__ import annotations

import os
import socket

import pytest
from genesis_tools import forget_genesis_heartbeats, one_each, results, submit

from orchestrator.core.supervisor import Supervisor
from orchestrator.genesis.sandbox import languages

pytestmark = pytest.mark.skipif(not (os.path.exists(languages.ELIXIR) and os.path.exists(languages.RUSTC)),
                                reason="needs Debian's elixir and rustc (make setup installs them)")


@pytest.fixture(scope="module", autouse=True)
def _no_heartbeats_left_behind(s):
    from datetime import UTC, datetime

    since = datetime.now(UTC)
    yield
    forget_genesis_heartbeats(s, since)


@pytest.fixture(scope="module")
def worker(s):
    os.environ["GENESIS_CONCURRENCY"] = "4"
    from orchestrator.genesis.worker import make

    w = make(s)
    sup = Supervisor([w], grace_s=5)
    sup.start()
    yield w
    sup.request_stop()
    sup.shutdown()


@pytest.fixture
def sing(worker, bus_for, clean_queues):
    return bus_for("svc_singularity")


def run_all(bus, jobs: list[dict], timeout: float = 60) -> list[dict]:
    ids = submit(bus, jobs)
    got = one_each(results(bus, ids, timeout), ids)
    return [got[i] for i in ids]


RUST_HELLO = 'fn main() {\n    println!("hello");\n}\n'
ELIXIR_HELLO = 'IO.puts("hello")\n'


def test_hello_world_in_every_mode(sing):
    jobs = [{"language": lang, "mode": mode, "code": code}
            for lang, code in (("rust", RUST_HELLO), ("elixir", ELIXIR_HELLO)) for mode in ("run", "validate", "lint")]
    jobs += [{"language": "rs", "code": RUST_HELLO}, {"language": "exs", "code": ELIXIR_HELLO}]  # aliases
    rs = run_all(sing, jobs)
    for j, r in zip(jobs, rs, strict=True):
        assert r["exit_code"] == 0 and r["error"] is None and r["killed_reason"] is None, (j, r)
        assert 0 < r["peak_memory_kb"] < 200_000 and r["duration_ms"] > 0, (j, r)
        if j.get("mode", "run") == "run":
            assert r["output"] == "hello\n" and r["stderr"] == "", (j, r)
    assert rs[4]["output"] == "syntax ok\n" and rs[5]["output"] == "no findings\n"
    assert rs[1]["output"] == "" and rs[2]["output"] == ""  # rustc --emit=metadata, rustc -D warnings: silent when clean


def test_compile_errors_fail_with_the_compilers_message(sing):
    rs = run_all(sing, [
        {"language": "rust", "code": 'fn main() {\n    let n: i32 = "x";\n    println!("{}", n);\n}\n'},
        {"language": "rust", "mode": "validate", "code": "fn main() {\n    println!(\"{}\", y);\n}\n"},
        {"language": "rust", "mode": "validate", "code": "fn main() {\n    let v = vec![1];\n    let w = v;\n"
                                                         "    println!(\"{:?}\", v);\n}\n"},
        {"language": "rust", "code": "fn main() { panic!(\"boom\"); }\n"},
        {"language": "elixir", "code": "defmodule M do\n  def f, do: nope()\nend\n"},
        {"language": "elixir", "mode": "validate", "code": 'IO.puts("hello"\n'},
        {"language": "elixir", "code": 'raise "boom"\n'},
    ])
    mismatch, unknown, moved, panic, ex_compile, ex_syntax, ex_raise = rs
    assert mismatch["exit_code"] == 1 and mismatch["output"] == "", "the program did not run"
    assert mismatch["error"] == "exit code 1: error[E0308]: mismatched types", mismatch
    assert "main.rs:2:18" in mismatch["stderr"] and "expected `i32`, found `&str`" in mismatch["stderr"]
    assert unknown["error"] == "exit code 1: error[E0425]: cannot find value `y` in this scope", unknown
    assert moved["error"] == "exit code 1: error[E0382]: borrow of moved value: `v`", "validate runs the borrow checker"
    assert panic["exit_code"] == 101 and panic["error"].startswith("exit code 101: thread 'main' panicked at 'boom'")
    assert ex_compile["exit_code"] == 1 and ex_compile["error"].startswith(
        "exit code 1: ** (CompileError) main.exs:2: undefined function nope/0"), ex_compile
    assert ex_syntax["exit_code"] == 1 and ex_syntax["error"].startswith(
        "exit code 1: ** (TokenMissingError) main.exs:2:1: missing terminator: )"), ex_syntax
    assert ex_raise["exit_code"] == 1 and ex_raise["error"] == "exit code 1: ** (RuntimeError) boom", ex_raise


def test_lint_reports_warnings_and_runs_nothing(sing):
    ex = ('defmodule M do\n  def f(x) do\n    y = 1\n    String.nope(x)\n  end\nend\n'
          'z = 3\nFile.write!("ran", "x")\nIO.puts("top-level code ran")\n')
    ugly = 'defmodule   M do\ndef f(x), do:   x\nend\n'
    rs = run_all(sing, [{"language": "rust", "mode": "lint", "code": "fn main() {\n    let x = 1;\n}\n"},
                        {"language": "elixir", "mode": "lint", "code": ex},
                        {"language": "elixir", "mode": "lint", "code": ugly}])
    rust, warned, unformatted = rs
    assert rust["exit_code"] == 1 and rust["error"] == "exit code 1: error: unused variable: `x`", rust
    assert "main.rs:2:9" in rust["stdout"] and "implied by `-D warnings`" in rust["stdout"]
    assert warned["exit_code"] == 1 and "top-level code ran" not in warned["stdout"], warned
    for finding in ('variable "y" is unused', 'variable "z" is unused', "String.nope/1 is undefined or private"):
        assert finding in warned["stdout"], (finding, warned["stdout"])
    assert warned["error"].startswith('exit code 1: warning: variable "y" is unused'), warned
    assert unformatted["exit_code"] == 1 and unformatted["error"] == (
        'exit code 1: main.exs:1: not formatted as `mix format` writes it; expected: "defmodule M do"'), unformatted


def test_time_and_cpu_limits_hold_both_languages(sing):
    rs = run_all(sing, [{"language": "rust", "code": "fn main() { loop {} }\n", "timeout_s": 1},
                        {"language": "elixir", "code": "Process.sleep(:infinity)\n", "timeout_s": 1},
                        {"language": "rust", "code": "fn main() { loop {} }\n", "limits": {"cpu_s": 1}},
                        {"language": "elixir", "code": "defmodule L do\n  def f(n), do: f(n + 1)\nend\nL.f(0)\n",
                         "limits": {"cpu_s": 1}}])
    for r in rs[:2]:
        assert r["killed_reason"] == "timeout" and r["exit_code"] is None, r
        assert 900 <= r["duration_ms"] < 5000 and "timed out after 1s" in r["error"], r
    for r in rs[2:]:
        assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "cpu", r
        assert r["error"].startswith("resource limit exceeded: cpu (limits: cpu_s=1)"), r


def test_memory_limit_holds_the_program_and_the_compiler(sing):
    rs = run_all(sing, [
        {"language": "rust", "code": "fn main() {\n    let mut v = Vec::new();\n"
                                     "    loop { v.push(vec![1u8; 10_000_000]); }\n}\n", "limits": {"memory_mb": 128}},
        {"language": "elixir", "code": "Enum.reduce(1..100_000_000, [], fn i, acc -> [i | acc] end) |> length() "
                                       "|> IO.puts()\n", "limits": {"memory_mb": 128}},
        {"language": "rust", "code": RUST_HELLO, "limits": {"memory_mb": 24}},   # too little for rustc itself
        {"language": "rust", "code": RUST_HELLO, "limits": {"memory_mb": 96}},   # enough for a hello world's compile
    ])
    for r in rs[:3]:
        assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "memory", (r["error"], r["stderr"][-500:])
        assert r["output"] == "" and r["duration_ms"] < 10_000, r
    assert rs[0]["peak_memory_kb"] <= 128 * 1024 * 1.02 and rs[1]["peak_memory_kb"] <= 128 * 1024 * 1.02
    assert "rustc compiles inside the job, so the compile counts against memory_mb" in rs[2]["error"], rs[2]
    assert rs[2]["error"].startswith("resource limit exceeded: memory (limits: memory_mb=24)")
    assert rs[3]["output"] == "hello\n" and rs[3]["exit_code"] == 0, rs[3]


def test_too_few_processes_for_the_runtime_is_named(sing):
    """The Erlang VM starts ~18 threads and rustc ~14: below that the job fails, and the result says which
    limit held it and what the runtime needs."""
    rs = run_all(sing, [{"language": "elixir", "code": ELIXIR_HELLO, "limits": {"processes": 8}},
                        {"language": "rust", "code": RUST_HELLO, "limits": {"processes": 8}}])
    for r in rs:
        assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "processes", (r["error"], r["stderr"])
        assert r["error"].startswith("resource limit exceeded: processes (limits: processes=8); "), r
    assert "the Erlang VM itself takes about 40 MB, 18 processes/threads" in rs[0]["error"]
    assert "rustc compiles inside the job" in rs[1]["error"]


def test_no_network_from_either_language(sing):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    rust = ("use std::net::{TcpStream, ToSocketAddrs};\nfn main() {\n"
            f"    match TcpStream::connect((\"127.0.0.1\", {port})) {{\n"
            "        Ok(_) => println!(\"CONNECTED\"),\n        Err(e) => println!(\"refused {}\", e),\n    }\n"
            "    match (\"example.com\", 80).to_socket_addrs() {\n"
            "        Ok(_) => println!(\"RESOLVED\"),\n        Err(e) => println!(\"no dns {}\", e),\n    }\n}\n")
    elixir = (f"IO.inspect(:gen_tcp.connect({{127, 0, 0, 1}}, {port}, [], 1000))\n"
              "IO.inspect(:inet.gethostbyname(~c\"example.com\"))\n")
    try:
        r, e = run_all(sing, [{"language": "rust", "code": rust}, {"language": "elixir", "code": elixir}])
        accepted = []
        try:
            while True:
                accepted.append(srv.accept())
        except TimeoutError:
            pass
    finally:
        srv.close()
    assert accepted == [], "a job reached a listener on the host's 127.0.0.1"
    assert r["exit_code"] == 0 and "refused Connection refused" in r["output"] and "no dns" in r["output"], r
    assert "CONNECTED" not in r["output"] and "RESOLVED" not in r["output"]
    assert e["output"] == "{:error, :econnrefused}\n{:error, :nxdomain}\n", e


def test_a_machine_without_them_says_which_package(monkeypatch):
    from orchestrator.genesis.sandbox import Limits, Sandbox

    monkeypatch.setattr(languages, "RUSTC", "/nonexistent/rustc")
    monkeypatch.setattr(languages, "ELIXIR", "/nonexistent/elixir")
    sb = Sandbox()
    r = sb.run(RUST_HELLO, "rust", "run", Limits())
    assert r["exit_code"] is None and r["error"].startswith("rust is not installed: apt-get install rustc"), r
    e = sb.run(ELIXIR_HELLO, "elixir", "lint", Limits())
    assert e["exit_code"] is None and e["error"].startswith("elixir is not installed: apt-get install elixir"), e
    assert "supported here: python, bash" in e["error"] and "elixir" not in e["error"].split("supported here:")[1]
    u = sb.run("x", "cobol", "run", Limits())
    assert "supported: python, javascript (node), bash, elixir, rust" in u["error"]


def test_without_a_cgroup_they_still_run_and_memory_is_held_per_process(monkeypatch):
    """GENESIS_CGROUP=off (memfd denied by seccomp, memory = address space per process): the Erlang VM and
    rustc start, lint, and a memory bomb stops at memory_mb + the runtime's 512 MB of reservations."""
    from orchestrator.genesis.sandbox import Limits, Sandbox

    monkeypatch.setenv("GENESIS_CGROUP", "off")
    sb = Sandbox(slots=1)
    assert sb.cgroups is None and sb.confinement()["memfd"] == "denied"
    for lang, mode, code in (("elixir", "run", ELIXIR_HELLO), ("elixir", "lint", ELIXIR_HELLO),
                             ("rust", "run", RUST_HELLO), ("rust", "validate", RUST_HELLO)):
        r = sb.run(code, lang, mode, Limits())
        assert r["exit_code"] == 0 and r["error"] is None, (lang, mode, r)
    lim = Limits(memory_mb=128)
    rust = sb.run("fn main() {\n    let mut v = Vec::new();\n    loop { v.push(vec![1u8; 10_000_000]); }\n}\n",
                  "rust", "run", lim)
    ex = sb.run("Enum.reduce(1..100_000_000, [], fn i, acc -> [i | acc] end) |> length() |> IO.puts()\n",
                "elixir", "run", lim)
    for r in (rust, ex):
        assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "memory", (r["error"], r["stderr"][-500:])
        assert r["peak_memory_kb"] <= (128 + 512) * 1024 * 1.02, r
    assert "memory allocation of 10000000 bytes failed" in rust["stderr"]
    assert "Cannot allocate" in ex["stderr"]


def test_the_cli_runs_them_and_check_lists_the_languages(tmp_path, s):
    from helpers import run_cli

    f = tmp_path / "main.rs"
    f.write_text('fn main() {\n    println!("{}", 6 * 7);\n}\n')
    r = run_cli("genesis", "run", str(f), "-l", "rust")
    assert r.returncode == 0 and r.stdout == "42\n", (r.stdout, r.stderr)
    r = run_cli("genesis", "run", "-", "-l", "elixir", "-m", "lint", input="IO.puts(1+1)\n")
    assert r.returncode == 1 and 'expected: "IO.puts(1 + 1)"' in r.stdout, (r.stdout, r.stderr)
    r = run_cli("genesis", "check")
    assert r.returncode == 0 and "languages: python, bash, javascript, elixir, rust\n" in r.stdout, r.stdout
    assert "elixir" in run_cli("genesis", "run", "--help").stdout
