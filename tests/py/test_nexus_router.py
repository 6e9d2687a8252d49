"""The LLM router against real local provider servers: routing, fallbacks, retries, timeouts, budgets."""

from __future__ import annotations

import threading

import pytest
from llm_servers import ProviderServer

from orchestrator.core.messages import ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.infra.db import connect, make_pool, owner_conninfo, role_conninfo
from orchestrator.nexus.router import Router

MSG = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server():
    srv = ProviderServer(slow_s=1.0)
    yield srv
    srv.close()


@pytest.fixture
def nx(s, server):
    """The nexus owner's connection with a clean configuration: three providers on the local server."""
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("TRUNCATE nexus.llm_calls, nexus.budgets, nexus.budget_usage, nexus.reservations")
        c.execute("DELETE FROM nexus.routes")
        c.execute("DELETE FROM nexus.providers WHERE name <> 'offline'")
        for name, kind, base in (("oa", "openai", server.url + "/v1"), ("an", "anthropic", server.url),
                                 ("ge", "gemini", server.url)):
            c.execute("SELECT nexus.set_provider(%s, %s, %s, %s, 5, 2, 1)", (name, kind, base, f"TEST_{name.upper()}_KEY"))
        for name, prov in (("m_oa", "oa"), ("m_an", "an"), ("m_ge", "ge"), ("m_a", "oa"), ("m_b", "oa")):
            c.execute("SELECT nexus.set_model(%s, %s, %s, 1.0, 2.0, 100)", (name, prov, name))
        server.script.clear()
        server.calls.clear()
        yield c
        c.execute("DELETE FROM nexus.routes")
        c.execute("DELETE FROM nexus.providers WHERE name <> 'offline'")
        c.execute("SELECT nexus.set_route('*', ARRAY['offline'])")


@pytest.fixture
def router(s, monkeypatch):
    for k in ("OA", "AN", "GE"):
        monkeypatch.setenv(f"TEST_{k}_KEY", f"key-{k.lower()}")
    pool = make_pool(role_conninfo(s, "nexus", "svc_nexus"), max_size=4)
    r = Router(pool, sleep=lambda _s: None)
    yield r
    r.close()
    pool.close()


def req(task="chat", **kw):
    return {"id": ulid(), "agent_id": "agent-r", "task_type": task, "messages": MSG, **kw}


def calls_of(nx, rid):
    return nx.execute("SELECT attempt, model, status, error, tokens_in, tokens_out, cost, latency_ms "
                      "FROM nexus.llm_calls WHERE request_id = %s ORDER BY id", (rid,)).fetchall()


@pytest.mark.parametrize("model,fmt,header,key", [("m_oa", "openai", "authorization", "Bearer key-oa"),
                                                  ("m_an", "anthropic", "x-api-key", "key-an"),
                                                  ("m_ge", "gemini", "x-goog-api-key", "key-ge")])
def test_each_wire_format_answers_and_logs_usage_and_cost(nx, router, server, model, fmt, header, key):
    nx.execute("SELECT nexus.set_route('chat', ARRAY[%s])", (model,))
    r = req()
    out = router.route(r)
    assert out["result"] == f"{fmt}:{model} says hi" and out["model"] == model and out["request_id"] == r["id"]
    assert out["usage"]["prompt_tokens"] == 11 and out["usage"]["completion_tokens"] == 7
    assert out["usage"]["cost"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1000)
    [call] = server.calls
    assert call["format"] == fmt and call["headers"][header] == key
    assert "be brief" in str(call["body"]) and "hello there" in str(call["body"])
    [row] = calls_of(nx, r["id"])
    assert row["status"] == "ok" and row["tokens_in"] == 11 and row["tokens_out"] == 7
    assert float(row["cost"]) == pytest.approx(0.025) and row["latency_ms"] > 0


def test_retries_429_and_5xx_then_falls_back_in_route_order(nx, router, server):
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_a', 'm_b'])")
    server.script.update({"m_a": ["500"], "m_b": ["429", "ok"]})
    r = req()
    out = router.route(r)
    assert out["model"] == "m_b" and out["result"] == "openai:m_b says hi" and out["usage"]["attempts"] == 5
    assert [c["model"] for c in server.calls] == ["m_a", "m_a", "m_a", "m_b", "m_b"]
    rows = calls_of(nx, r["id"])
    assert [(x["model"], x["attempt"], x["status"]) for x in rows] == [
        ("m_a", 1, "error"), ("m_a", 2, "error"), ("m_a", 3, "error"), ("m_b", 1, "error"), ("m_b", 2, "ok")]
    assert "HTTP 500" in rows[0]["error"] and "HTTP 429" in rows[3]["error"]


def test_slow_provider_times_out_and_the_next_model_answers(nx, router, server):
    nx.execute("UPDATE nexus.providers SET timeout_s = 0.3, max_retries = 0 WHERE name = 'oa'")
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_a', 'm_an'])")
    server.script["m_a"] = ["slow"]
    out = router.route(req())
    assert out["model"] == "m_an"
    [first, _] = server.calls
    assert first["model"] == "m_a"
    assert "timeout" in nx.execute("SELECT error FROM nexus.llm_calls WHERE model = 'm_a'").fetchone()["error"]


@pytest.mark.parametrize("first", ["m_a", "m_an", "m_ge"])
@pytest.mark.parametrize("bad", ["malformed", "notjson", "400"])
def test_malformed_bodies_and_4xx_are_not_retried_but_fall_back(nx, router, server, first, bad):
    nx.execute("SELECT nexus.set_route('chat', ARRAY[%s, 'm_b'])", (first,))
    server.script[first] = [bad]
    out = router.route(req())
    assert out["model"] == "m_b"
    assert [c["model"] for c in server.calls] == [first, "m_b"]


@pytest.mark.parametrize("model", ["m_oa", "m_an", "m_ge"])
def test_each_format_retries_429_and_500_then_answers(nx, router, server, model):
    nx.execute("SELECT nexus.set_route('chat', ARRAY[%s])", (model,))
    server.script[model] = ["429", "500", "ok"]
    out = router.route(req())
    assert out["model"] == model and out["usage"]["attempts"] == 3 and len(server.calls) == 3


def test_every_option_failing_gives_an_error_result_that_says_why(nx, router, server):
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_a', 'm_b'])")
    nx.execute("UPDATE nexus.providers SET max_retries = 1 WHERE name = 'oa'")
    server.script.update({"m_a": ["500"], "m_b": ["malformed"]})
    r = req()
    out = router.route(r)
    assert out["result"] is None and out["request_id"] == r["id"]
    assert "every model failed" in out["error"] and "m_a attempt 2: HTTP 500" in out["error"]
    assert "m_b attempt 1: malformed response" in out["error"]
    assert nx.execute("SELECT count(*) AS n FROM nexus.reservations").fetchone()["n"] == 0


def test_bare_string_messages_are_user_messages(nx, router, server):
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_an'])")
    out = router.route({**req(), "messages": ["just a string"]})
    assert out["model"] == "m_an"
    assert server.calls[0]["body"]["messages"] == [{"role": "user", "content": "just a string"}]


@pytest.mark.parametrize("bad", [0, -5, 2**31, 10**12, 1.5, "100", True])
def test_out_of_range_max_tokens_is_an_error_result_not_a_retry(nx, router, server, bad):
    out = router.route({**req(), "max_tokens": bad})
    assert out["result"] is None and out["error"].startswith("max_tokens must be an integer from 1 to")


def test_requested_model_goes_first_and_unknown_task_uses_the_default_route(nx, router, server):
    nx.execute("SELECT nexus.set_route('*', ARRAY['m_ge'])")
    assert router.route(req("never-configured"))["model"] == "m_ge"
    assert router.route(req("never-configured", model="m_an"))["model"] == "m_an"


def test_no_route_and_missing_key_are_clear_errors(nx, router, server, monkeypatch):
    out = router.route(req("nothing"))
    assert "no model configured for task_type 'nothing'" in out["error"]
    assert "orchestrator nexus routes set" in out["error"]
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_oa'])")
    monkeypatch.delenv("TEST_OA_KEY")
    out = router.route(req())
    assert "TEST_OA_KEY" in out["error"] and "is not set" in out["error"] and server.calls == []


def test_budget_refuses_then_settles_real_cost(nx, router, server):
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_oa'])")
    # estimate: prompt chars/4 + max_tokens(100); real: 11 + 7 = 18 tokens
    nx.execute("SELECT nexus.set_budget('agent-r', 130, NULL)")
    assert router.route(req())["model"] == "m_oa"
    assert nx.execute("SELECT tokens FROM nexus.budget_usage WHERE agent_id = 'agent-r'").fetchone()["tokens"] == 18
    out = router.route(req())  # 18 + 104 fits in 130
    assert out["model"] == "m_oa"
    out = router.route(req())  # 36 + 104 > 130
    assert "budget exceeded for agent agent-r" in out["error"] and len(server.calls) == 2
    assert nx.execute("SELECT count(*) AS n FROM nexus.llm_calls WHERE status = 'refused'").fetchone()["n"] == 1


def test_two_concurrent_requests_at_the_budget_edge_exactly_one_admitted(s, nx):
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_oa'])")
    conns = [connect(role_conninfo(s, "nexus", "svc_nexus")) for _ in range(2)]
    try:
        for rnd in range(8):
            agent = f"edge-{rnd}"
            # each request reserves 4/4 + 100 = 101 tokens; the budget holds one of them, not two
            nx.execute("SELECT nexus.set_budget(%s, 150, NULL)", (agent,))
            barrier, got = threading.Barrier(2), [None, None]

            def go(i, barrier=barrier, got=got, agent=agent):
                barrier.wait()
                got[i] = conns[i].execute("SELECT nexus.admit(%s, %s, 'chat', NULL, 4, NULL) AS a",
                                          (ulid(), agent)).fetchone()["a"]["admitted"]

            ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            assert sorted(got) == [False, True], f"round {rnd}: {got}"
            used = nx.execute("SELECT tokens FROM nexus.budget_usage WHERE agent_id = %s", (agent,)).fetchone()
            assert used["tokens"] == 101
    finally:
        for c in conns:
            c.close()


def test_daemon_worker_answers_on_reply_to_and_the_offline_default(s, nx, bus_for, clean_queues):
    from orchestrator.cli.workers import factories as load_all
    from orchestrator.infra.config import settings

    nx.execute("SELECT nexus.set_route('*', ARRAY['offline'])")
    nx.execute("SELECT nexus.set_route('chat', ARRAY['m_a'])")
    nx.execute("UPDATE nexus.providers SET max_retries = 0 WHERE name = 'oa'")
    worker = load_all()["nexus"](settings())
    sup = Supervisor([worker], grace_s=5)
    sup.start()
    try:
        sing = bus_for("svc_singularity")
        ok = sing.request("llm_requests", {"agent_id": "a1", "task_type": "summarise", "messages": MSG},
                          reply_to="llm_results", timeout=20)
        assert ok["model"] == "offline" and ok["result"].startswith("[offline provider")
        assert "hello there" in ok["result"]
        server_down = sing.request("llm_requests", {"agent_id": "a1", "task_type": "chat", "messages": MSG},
                                   reply_to="llm_results", timeout=20)
        assert server_down["result"] is None and "every model failed" in server_down["error"]
    finally:
        sup.request_stop()
        sup.shutdown()
    with connect(owner_conninfo(s, "shared_queue")) as c:
        left = c.execute("SELECT count(*) AS n FROM pgmq.q_llm_requests").fetchone()["n"]
    assert left == 0


def test_cli_shows_and_edits_providers_models_routes_budgets_and_users(nx, run_cli):
    run_cli("nexus", "providers", "set", "cli-p", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1",
            "--key-env", "CLI_KEY", check=True)
    run_cli("nexus", "models", "set", "cli-m", "--provider", "cli-p", "--cost-in", "0.5", check=True)
    run_cli("nexus", "routes", "set", "cli-task", "cli-m", "m_b", check=True)
    run_cli("nexus", "budget", "set", "cli-agent", "--tokens", "500", check=True)
    out = run_cli("nexus", "providers", check=True).stdout
    assert "cli-p" in out and "CLI_KEY" in out
    assert "cli-m -> m_b" in run_cli("nexus", "routes", check=True).stdout
    assert "cli-agent" in run_cli("nexus", "budget", check=True).stdout
    bad = run_cli("nexus", "routes", "set", "cli-task", "no-such-model")
    assert bad.returncode == 1 and "unknown model(s): no-such-model" in bad.stderr and "models set" in bad.stderr
    short = run_cli("nexus", "user", "add", "cli-user", env={"NEXUS_USER_PASSWORD": "short"})
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    run_cli("nexus", "user", "add", "cli-user", env={"NEXUS_USER_PASSWORD": "long-enough-pw"}, check=True)
    assert nx.execute("SELECT password_hash AS h FROM nexus.users WHERE username = 'cli-user'").fetchone()["h"] \
        .startswith("scrypt$")
    assert "cli-user removed" in run_cli("nexus", "user", "remove", "cli-user", check=True).stdout
    assert "provider cli-p removed" in run_cli("nexus", "providers", "remove", "cli-p", check=True).stdout
    assert "cli-m" not in run_cli("nexus", "models", check=True).stdout
    nx.execute("DELETE FROM nexus.budgets WHERE agent_id = 'cli-agent'")
