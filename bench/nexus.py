"""Nexus: router overhead over calling the provider directly (same local server, same run), and the
approvals page rendering 1,000 pending requests."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from bench.common import pct, ready
from orchestrator.core.messages import ulid
from orchestrator.infra.db import connect, make_pool, owner_conninfo, role_conninfo
from orchestrator.nexus.providers import openai
from orchestrator.nexus.router import Router, fast_commit

N = int(os.environ.get("BENCH_NEXUS_N", "400"))
PAGE_ITEMS = 1000
ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()


class _OpenAI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without this, delayed ACKs add 40 ms

    def log_message(self, *_a) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)


def _router_overhead(s) -> list[tuple[str, str, str]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    pool = make_pool(fast_commit(role_conninfo(s, "nexus", "svc_nexus")), max_size=2)  # as the worker does
    client = httpx.Client()
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("SELECT nexus.set_provider('bench', 'openai', %s, NULL, 10, 0, 0)", (base,))
        c.execute("SELECT nexus.set_model('bench-model', 'bench', 'bench-model', 0.5, 1.5, 16)")
        c.execute("SELECT nexus.set_route('bench', ARRAY['bench-model'])")
    try:
        router = Router(pool, client)
        cand = router.route({"id": ulid(), "agent_id": "bench", "task_type": "bench",
                             "messages": [{"role": "user", "content": "warm"}]})
        cand = {"provider": "bench", "remote_model": "bench-model", "base_url": base, "api_key_env": None,
                "timeout_s": 10}
        msgs = [{"role": "user", "content": "summarise the change in three sentences " * 4}]
        direct, routed = [], []
        for i in range(2 * N):  # interleaved, so machine noise hits both alike
            t0 = time.perf_counter()
            if i % 2:
                openai(client, cand, msgs, 16)
                direct.append((time.perf_counter() - t0) * 1000)
            else:
                router.route({"id": ulid(), "agent_id": "bench", "task_type": "bench", "messages": msgs})
                routed.append((time.perf_counter() - t0) * 1000)
    finally:
        with connect(owner_conninfo(s, "nexus")) as c:
            c.execute("DELETE FROM nexus.providers WHERE name = 'bench'")
            c.execute("DELETE FROM nexus.llm_calls WHERE agent_id = 'bench'")
            c.execute("DELETE FROM nexus.budget_usage WHERE agent_id = 'bench'")
        client.close()
        pool.close()
        httpd.shutdown()
    d50, r50 = statistics.median(direct), statistics.median(routed)
    return [
        ("LLM call: provider direct vs through the router, p50 (ms)", f"{d50:.2f} vs {r50:.2f} = {r50 / d50:.2f}x", "-"),
        ("router overhead per call, p50 (ms)", f"{r50 - d50:.2f}", "<= 2 ms"),
        ("router overhead per call, p99 vs direct p99 (ms)", f"{pct(routed, 99) - pct(direct, 99):.2f}", "-"),
    ]


def _approvals_page(s) -> list[tuple[str, str, str]]:
    from orchestrator.nexus.hitl import Hitl
    from orchestrator.nexus.hitl_worker import WebServer
    from orchestrator.nexus.web.app import create_app

    diff = "--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n-a = 1\n+a = 2\n b = 3\n c = 4\n"
    token = secrets.token_urlsafe(16)
    import hashlib

    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("DELETE FROM nexus.hitl_items WHERE request_id LIKE 'bench-%'")
        c.execute("""INSERT INTO nexus.hitl_items (request_id, kind, queue, msg_id, read_ct, lease_until, reply_to,
                                                   agent_id, payload)
                     SELECT 'bench-' || g, 'approval', 'approval_requests', -g, 1, now() + interval '1 hour',
                            'approval_responses', 'bench-agent',
                            jsonb_build_object('id', 'bench-' || g, 'agent_id', 'bench-agent',
                                               'file_path', 'src/module_' || g || '.py', 'diff', %s::text,
                                               'reason', 'benchmark')
                       FROM generate_series(1, %s) g""", (diff, PAGE_ITEMS))
        c.execute("SELECT nexus.user_set('bench-user', 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA')")
        # a session straight into the table (the owner may; the page's role signs in only with a password)
        c.execute("INSERT INTO nexus.sessions (token_hash, username, csrf, expires_at) "
                  "VALUES (%s, 'bench-user', 'x', now() + interval '10 minutes')", (hashlib.sha256(token.encode()).digest(),))
        # only the bench items are pending during the measurement
        others = c.execute("SELECT count(*) AS n FROM nexus.hitl_items WHERE status = 'pending' AND kind = 'approval' "
                           "AND request_id NOT LIKE 'bench-%'").fetchone()["n"]
    pool = make_pool(role_conninfo(s, "nexus", "svc_nexus"), max_size=2)
    web = WebServer(create_app(Hitl(None, pool), pool), "127.0.0.1", 0).start()
    times = []
    try:
        with httpx.Client(cookies={"nexus_session": token}) as client:
            for i in range(12):
                t0 = time.perf_counter()
                r = client.get(web.url + "/approvals")
                if i >= 2:
                    times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200 and r.text.count('class="item"') == min(1000, PAGE_ITEMS + others), r.status_code
    finally:
        web.stop()
        pool.close()
        with connect(owner_conninfo(s, "nexus")) as c:
            c.execute("DELETE FROM nexus.hitl_items WHERE request_id LIKE 'bench-%'")
            c.execute("SELECT nexus.user_remove('bench-user')")
    return [(f"approvals page with {PAGE_ITEMS} pending requests, p50 (ms)", f"{statistics.median(times):.0f}",
             "<= 300 ms"),
            (f"approvals page with {PAGE_ITEMS} pending requests, max of 10 (ms)", f"{max(times):.0f}", "-")]


def _round_trip(s) -> list[tuple[str, str, str]]:
    """llm_requests -> nexus worker (offline provider) -> llm_results, as an agent sees it."""
    from orchestrator.cli.workers import factories as load_all
    from orchestrator.core.bus import Bus
    from orchestrator.core.supervisor import Supervisor

    sup = Supervisor([load_all()["nexus"](s)], grace_s=5)
    sup.start()
    agent = Bus(role_conninfo(s, "shared_queue", "svc_singularity"), source="bench", pool_size=2)
    times = []
    try:
        for i in range(N // 2 + 20):
            t0 = time.perf_counter()
            agent.request("llm_requests", {"agent_id": "bench", "task_type": "bench-offline",
                                           "messages": [{"role": "user", "content": "ping"}]},
                          reply_to="llm_results", timeout=30)
            if i >= 20:
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        sup.request_stop()
        sup.shutdown()
        agent.close()
        with connect(owner_conninfo(s, "nexus")) as c:
            c.execute("DELETE FROM nexus.llm_calls WHERE agent_id = 'bench'")
            c.execute("DELETE FROM nexus.budget_usage WHERE agent_id = 'bench'")
    return [("LLM request -> nexus worker (offline) -> llm_results, p50 / p99 (ms)",
             f"{statistics.median(times):.2f} / {pct(times, 99):.2f}", "-")]


def run() -> list[tuple[str, str, str]]:
    s = ready()
    return _router_overhead(s) + _round_trip(s) + _approvals_page(s)


if __name__ == "__main__":
    for row in run():
        print(row)
