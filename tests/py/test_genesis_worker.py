"""Genesis end to end through the real worker (in this process) and real bwrap: every language and mode,
errors, timeouts, resource bombs, isolation (network, files, env, jobs from each other), 50 jobs exactly once."""

from __future__ import annotations

import os
import socket

import pytest
from genesis_tools import forget_genesis_heartbeats, one_each, procs_with, results, submit

from helpers import ROOT
from orchestrator.core.supervisor import Supervisor
from orchestrator.infra.db import connect, owner_conninfo

SECRET_ENV = "GENESIS_TEST_WORKER_SECRET"


@pytest.fixture(scope="module", autouse=True)
def _no_heartbeats_left_behind(s):
    from datetime import UTC, datetime

    since = datetime.now(UTC)
    yield
    forget_genesis_heartbeats(s, since)


@pytest.fixture(scope="module")
def worker(s):
    os.environ[SECRET_ENV] = "do-not-leak-7f3a"
    os.environ["GENESIS_CONCURRENCY"] = "4"
    from orchestrator.genesis.worker import make

    w = make(s)
    sup = Supervisor([w], grace_s=5)
    sup.start()
    yield w
    sup.request_stop()
    sup.shutdown()
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture
def sing(worker, bus_for, clean_queues):
    return bus_for("svc_singularity")


def run_all(bus, jobs: list[dict], timeout: float = 40) -> list[dict]:
    ids = submit(bus, jobs)
    got = one_each(results(bus, ids, timeout), ids)
    return [got[i] for i in ids]


HELLO = {
    ("python", "run"): "print('hello')", ("python", "validate"): "print('hello')",
    ("python", "lint"): "print('hello')\n",
    ("javascript", "run"): "console.log('hello')", ("javascript", "validate"): "console.log('hello')",
    ("javascript", "lint"): "console.log('hello');\n",
    ("bash", "run"): "echo hello", ("bash", "validate"): "echo hello", ("bash", "lint"): "echo hello\n",
}


def test_hello_world_in_each_language_and_mode(sing):
    keys = list(HELLO)
    rs = run_all(sing, [{"language": lang, "mode": mode, "code": HELLO[(lang, mode)]} for lang, mode in keys])
    for (lang, mode), r in zip(keys, rs, strict=True):
        assert r["exit_code"] == 0 and r["error"] is None, (lang, mode, r)
        assert r["killed_reason"] is None
        if mode == "run":
            assert r["output"] == "hello\n" and r["stdout"] == "hello\n", (lang, r)
        # the job's own peak, not the worker's memory (which a vfork()ed child's maxrss would include)
        assert 0 < r["peak_memory_kb"] < (120_000 if lang == "javascript" or mode == "lint" else 30_000), (lang, mode, r)
        assert r["duration_ms"] > 0 and r["type"] == "job_result"


def test_lint_finds_problems_and_unsupported_combinations_say_what_works(sing):
    rs = run_all(sing, [{"language": "python", "mode": "lint", "code": "import os\n"},
                        {"language": "javascript", "mode": "lint", "code": "var x = 1;\nconsole.log(y);\n"},
                        {"language": "bash", "mode": "lint", "code": "echo $1\n"},
                        {"language": "cobol", "mode": "run", "code": "x"}])
    assert rs[0]["exit_code"] == 1 and "F401" in rs[0]["stdout"], rs[0]
    assert rs[1]["exit_code"] == 1 and "no-undef" in rs[1]["stdout"] and "no-unused-vars" in rs[1]["stdout"], rs[1]
    assert rs[2]["exit_code"] == 1 and "SC2086" in rs[2]["stdout"], rs[2]
    assert rs[3]["exit_code"] is None and "unknown language 'cobol'" in rs[3]["error"]
    assert "python, javascript (node), bash" in rs[3]["error"]
    # the bus refuses an unknown mode at publish time; the sandbox says the same to a direct caller
    from orchestrator.genesis.sandbox import Limits, Sandbox

    r = Sandbox().run("x", "python", "compile", Limits())
    assert r["exit_code"] is None and "unknown mode 'compile'; supported modes: run, validate, lint" in r["error"]


def test_syntax_errors_are_error_results_and_the_worker_goes_on(sing):
    rs = run_all(sing, [{"language": "python", "mode": "validate", "code": "def f(:\n"},
                        {"language": "javascript", "mode": "validate", "code": "function ("},
                        {"language": "bash", "mode": "validate", "code": "if then fi ("},
                        {"language": "python", "mode": "run", "code": "print(1 +)"}])
    for r in rs:
        assert r["exit_code"] not in (0, None) and r["error"].startswith("exit code"), r
    assert "SyntaxError" in rs[0]["stderr"] and "SyntaxError" in rs[1]["stderr"]
    (after,) = run_all(sing, [{"language": "python", "code": "print('still here')"}])
    assert after["output"] == "still here\n"


def test_timeouts_kill_the_whole_tree(sing):
    marker = "genesis-double-fork-" + os.urandom(4).hex()
    daemon = (f"import os, signal, time\n"
              f"if os.fork() == 0:\n"
              f"    os.setsid()\n"
              f"    if os.fork() == 0:\n"
              f"        os.execv('/usr/bin/python3', ['python3', '-c', 'import signal, time; "
              f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)', '{marker}'])\n"
              f"    os._exit(0)\n"
              f"time.sleep(0.3)\n")
    rs = run_all(sing, [{"language": "python", "code": "while True: pass", "timeout_s": 1},
                        {"language": "python", "code": "import time; time.sleep(1e9)", "timeout_s": 1},
                        {"language": "bash", "code": "sleep 100000", "timeout_s": 1},
                        {"language": "javascript", "code": "for(;;){}", "timeout_s": 1},
                        {"language": "python", "code": daemon + "print('parent done')"},
                        {"language": "python", "code": daemon + "time.sleep(1e9)", "timeout_s": 1},
                        {"language": "python", "code": "x = b'x' * 50_000_000\nwhile True: pass", "timeout_s": 1}])
    for r in rs[:4]:
        assert r["killed_reason"] == "timeout" and r["exit_code"] is None, r
        assert 900 <= r["duration_ms"] < 5000 and "timed out after 1s" in r["error"]
    assert rs[4]["output"] == "parent done\n" and rs[4]["killed_reason"] is None
    assert rs[5]["killed_reason"] == "timeout"
    assert rs[6]["killed_reason"] == "timeout" and rs[6]["peak_memory_kb"] > 45_000, "a killed job's peak is measured"
    assert procs_with(marker) == [], "a double-forked child that ignores SIGTERM outlived its job"


def test_resource_bombs_are_contained(sing):
    lim = {"memory_mb": 128, "processes": 32, "tmpfs_mb": 16, "file_size_mb": 8, "output_kb": 32}
    bombs = {
        "memory": ("python", "a = []\nwhile True: a.append(' ' * 10**7)"),
        "memory-js": ("javascript", "const a = []; while (true) a.push(new Array(1e6).fill(1.5));"),
        "fork": ("python", "import os\nwhile True: os.fork()"),
        "fork-bash": ("bash", "f() { f | f & }; f; sleep 100"),  # bash retries forks: ends at its timeout
        "disk": ("python", "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'0' * 4_000_000); i += 1"),
        "file": ("python", "f = open('big', 'wb')\nwhile True: f.write(b'0' * 1_000_000)"),
        "output": ("python", "while True: print('x' * 1000)"),
        "shm": ("python", "i = 0\nwhile True:\n    open(f'/dev/shm/f{i}', 'wb').write(b'0' * 1_000_000); i += 1"),
    }
    # generous timeout: each bomb must hit its resource limit first, even on a loaded machine
    rs = run_all(sing, [{"language": lang, "code": code, "timeout_s": 3 if name == "fork-bash" else 10, "limits": lim}
                        for name, (lang, code) in bombs.items()]
                 + [{"language": "python", "code": "while True: pass", "timeout_s": 10, "limits": {"cpu_s": 1}}])
    by = dict(zip([*bombs, "cpu"], rs, strict=True))
    for name, r in by.items():
        assert r["killed_reason"] == "resource_exceeded", (name, r["killed_reason"], r["error"], r["stderr"][-300:])
        assert r["duration_ms"] < 10_000, name
    assert by["memory"]["exceeded"] == by["memory-js"]["exceeded"] == "memory"
    assert by["memory"]["peak_memory_kb"] > 50_000, "peak memory of the job is measured"
    assert by["fork"]["exceeded"] == by["fork-bash"]["exceeded"] == "processes"
    assert by["disk"]["exceeded"] == "disk" and by["shm"]["exceeded"] == "disk"
    assert by["file"]["exceeded"] == "file_size"
    assert by["cpu"]["exceeded"] == "cpu", "the CPU limit bites before the wall-clock timeout"
    out = by["output"]
    assert out["exceeded"] == "output" and out["truncated"] is True
    assert "[genesis: output truncated at 32768 bytes" in out["stdout"] and len(out["stdout"]) < 33_000


def test_no_network_no_host_files_no_env(sing, s):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    secrets = str(s.state_dir / "secrets.env")
    probes = {
        "tcp": f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
               f"    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)",
        "dns": "import socket\ntry:\n    socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
               "except OSError as e:\n    print('no dns', e)",
        "shadow": "print(open('/etc/shadow').read())",
        "tree": f"import os; print(os.listdir({str(ROOT)!r}))",
        "secrets": f"print(open({secrets!r}).read())",
        "usr_local": "import os; print(os.listdir('/usr/local'))",
        "write_root": "open('/evil', 'w').write('x')",
        "write_usr": "open('/usr/evil', 'w').write('x')",
        "env": "import os; print(dict(os.environ)); print(open('/proc/1/environ').read())",
        "uid": "import os; print(os.getuid(), os.getgid(), os.getgroups())",
    }
    rs = dict(zip(probes, run_all(sing, [{"language": "python", "code": c} for c in probes.values()]), strict=True))
    accepted = []
    try:
        while True:
            accepted.append(srv.accept())
    except TimeoutError:
        pass
    finally:
        srv.close()
    assert accepted == [], "the sandbox reached a listener on the host's 127.0.0.1"
    assert "refused" in rs["tcp"]["output"] and "no dns" in rs["dns"]["output"]
    for k in ("shadow", "tree", "secrets", "usr_local"):
        assert rs[k]["exit_code"] == 1 and "No such file or directory" in rs[k]["stderr"], (k, rs[k])
    for k in ("write_root", "write_usr"):
        assert rs[k]["exit_code"] == 1 and "Read-only file system" in rs[k]["stderr"], (k, rs[k])
    env = rs["env"]["output"]
    assert SECRET_ENV not in env and "do-not-leak" not in env and "PGPASSWORD" not in env
    assert sorted(eval(env.splitlines()[0])) == ["HOME", "LANG", "PATH", "PWD", "TMPDIR"]  # noqa: S307
    uid = rs["uid"]["output"].split()
    assert int(uid[0]) != 0 and int(uid[1]) != 0, "code runs as an unprivileged uid"


def test_nothing_written_by_one_job_is_visible_to_the_next(sing):
    (w,) = run_all(sing, [{"language": "python",
                           "code": "import os; open('left.txt', 'w').write('x'); os.mkdir('/work/d'); "
                                   "print(sorted(os.listdir('.')))"}])
    assert "left.txt" in w["output"]
    (r,) = run_all(sing, [{"language": "python", "code": "import os; print(sorted(os.listdir('/work')))"}])
    assert r["output"] == "['main.py']\n"


def test_fifty_concurrent_jobs_complete_exactly_once(sing, s, worker):
    ids = submit(sing, [{"language": "python", "code": f"print({i} * 2)"} for i in range(50)])
    got = results(sing, ids, timeout=60)
    rs = one_each(got, ids)
    assert [rs[i]["output"] for i in ids] == [f"{n * 2}\n" for n in range(50)]
    with connect(owner_conninfo(s, "genesis")) as c:
        rows = c.execute("SELECT runs, status FROM genesis.executions WHERE request_id = ANY(%s)", (ids,)).fetchall()
    assert len(rows) == 50 and all(r["runs"] == 1 and r["status"] == "finished" for r in rows)


def test_a_redelivered_finished_request_is_answered_from_the_record(sing, s, worker):
    ids = submit(sing, [{"language": "python", "code": "import random; print(random.random())"}])
    first = one_each(results(sing, ids), ids)[ids[0]]
    # the same request id again, as a redelivery after a lost ack would bring it
    sing.publish("job_requests", {"id": ids[0], "reply_to": "job_results", "language": "python", "mode": "run",
                                  "code": "import random; print(random.random())"})
    again = one_each(results(sing, ids), ids)[ids[0]]
    drop = ("id", "created_at", "timestamp")  # the envelope
    assert {k: v for k, v in again.items() if k not in drop} == {k: v for k, v in first.items() if k not in drop}, \
        "the stored result is replayed, the code did not run again"
    with connect(owner_conninfo(s, "genesis")) as c:
        assert c.execute("SELECT runs FROM genesis.executions WHERE request_id = %s", (ids[0],)).fetchone()["runs"] == 1


def test_requests_cannot_raise_their_limits(sing):
    (r,) = run_all(sing, [{"language": "python", "code": "print(1)", "timeout_s": 10**6,
                           "limits": {"memory_mb": 10**6}}])
    assert r["limits"]["timeout_s"] == 120 and r["limits"]["memory_mb"] == 2048
    (bad,) = run_all(sing, [{"language": "python", "code": "print(1)", "limits": {"bogus": 1}}])
    assert bad["error"].startswith("bad limits: unknown limit(s): bogus") and "known:" in bad["error"]


def test_concurrency_defaults_to_cores(monkeypatch):
    """Unset: one job per core (a core count this machine does not have, to tell it from a constant);
    set: that many; zero or not a number: the daemon stops naming the variable, its value and the fix."""
    from orchestrator.genesis.worker import concurrency

    monkeypatch.delenv("GENESIS_CONCURRENCY", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert concurrency() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown core count
    assert concurrency() == 1
    monkeypatch.setenv("GENESIS_CONCURRENCY", "3")
    assert concurrency() == 3
    monkeypatch.setenv("GENESIS_CONCURRENCY", "0")
    with pytest.raises(SystemExit, match="GENESIS_CONCURRENCY='0': give the number of jobs run in parallel"):
        concurrency()
    monkeypatch.setenv("GENESIS_CONCURRENCY", "x")
    with pytest.raises(SystemExit, match="GENESIS_CONCURRENCY='x': give .* as a whole number between 1 and 1024"):
        concurrency()


def test_a_memfd_bomb_through_the_bus_is_stopped_and_the_result_says_what_held_it(sing):
    bomb = ("import os\nheld = []\nfor i in range(56):\n    fd = os.memfd_create(f'm{i}')\n"
            "    os.write(fd, b'x' * (16 << 20))\n    held.append(fd)\nprint('held', 16 * len(held), 'MB')\n")
    (r,) = run_all(sing, [{"language": "python", "code": bomb, "limits": {"memory_mb": 256}}])
    assert r["killed_reason"] == "resource_exceeded" and r["exceeded"] == "memory", r
    assert "held" not in r["output"] and r["peak_memory_kb"] <= 256 * 1024 * 1.02
    assert r["confinement"]["seccomp"] is True and r["confinement"]["memfd"] in ("counted", "denied")
