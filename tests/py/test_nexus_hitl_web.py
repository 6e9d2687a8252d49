"""The HITL page in a real headless Chromium (Debian's, via playwright's executable_path).

Run as root, Chromium gets --no-sandbox (its sandbox refuses root); only the test browser gets that flag.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from psycopg.types.json import Jsonb

from helpers import run_cli
from orchestrator.core.messages import ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.infra.db import connect, owner_conninfo
from orchestrator.nexus.passwords import hash_password

PW = "correct-horse-1"
DIFF = "--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,2 @@\n-print('old')\n+print('new')\n context\n"


@pytest.fixture(scope="module")
def system(s):
    """The hitl worker (claims, leases, timeouts, publishing) and its page on a free port, plus four users."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    saved = {k: os.environ.get(k) for k in ("NEXUS_HITL_TICK_S", "NEXUS_HITL_LEASE_S", "NEXUS_METRICS_TOKEN")}
    # settings are read once, when the worker is built
    os.environ.update(NEXUS_HITL_TICK_S="0.2", NEXUS_HITL_LEASE_S="30", NEXUS_METRICS_TOKEN="t0ken")
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for q in ("approval_requests", "question_requests", "approval_responses", "question_responses"):
            c.execute("SELECT pgmq.purge_queue(%s)", (q,))
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("TRUNCATE nexus.hitl_decisions, nexus.hitl_items, nexus.sessions")
        for u in ("alice", "bob", "carol", "dave"):
            c.execute("SELECT nexus.user_set(%s, %s)", (u, hash_password(PW)))
    from orchestrator.nexus.hitl_worker import build

    hitl, web, worker = build(s, host="127.0.0.1", port=0)
    web.start()
    sup = Supervisor([worker], grace_s=5)
    sup.start()
    yield hitl, web.url
    sup.request_stop()
    sup.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def sing(bus_for):
    return bus_for("svc_singularity")


def signed_in(browser, url, user="alice"):
    ctx = browser.new_context()
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    page.goto(url + "/login")
    page.fill("#username", user)
    page.fill("#password", PW)
    page.click("#signin")
    page.wait_for_url(url + "/approvals")
    return ctx, page


def ask_approval(sing, hitl, **kw) -> str:
    rid = ulid()
    sing.publish("approval_requests", {"id": rid, "agent_id": "agent-7", "file_path": "app.py", "diff": DIFF,
                                       "reason": "refactor", **kw})
    wait_pending(hitl, "approval", rid)
    return rid


def wait_pending(hitl, kind, rid, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(i["request_id"] == rid for i in hitl.pending(kind)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{kind} {rid} never became pending")


def test_unsigned_visitor_is_sent_to_sign_in(system, browser):
    _hitl, url = system
    ctx = browser.new_context()
    page = ctx.new_page()
    for path in ("/approvals", "/questions", "/dashboard", "/"):
        page.goto(url + path)
        page.locator("#signin").wait_for(state="visible", timeout=10_000)  # is_visible() does not wait
        assert "/login" in page.url
    r = page.request.post(url + "/approvals/whatever", form={"decision": "approve"}, max_redirects=0)
    assert r.status == 303 and "/login" in r.headers["location"]
    assert page.request.get(url + "/metrics").status == 401
    page.goto(url + "/login")
    page.fill("#username", "alice")
    page.fill("#password", "wrong-password")
    page.click("#signin")
    # the click returns before the redirected page is rendered: wait for it (is_visible() does not)
    page.locator("#error").wait_for(state="visible", timeout=10_000)
    assert "error=1" in page.url
    ctx.close()


def test_sign_in_and_approve_publishes_the_decision(system, browser, sing):
    hitl, url = system
    rid = ask_approval(sing, hitl)
    ctx, page = signed_in(browser, url)
    item = page.locator(f"#approval-{rid}")
    assert item.locator("span.add").inner_text() == "+print('new')"
    assert item.locator("span.del").inner_text() == "-print('old')"
    item.locator("input[name=comment]").fill("looks good")
    item.locator("button[value=approve]").click()
    assert "decided" in page.locator("#msg").inner_text()
    resp = sing.await_reply("approval_responses", rid, timeout=10)
    assert resp["approved"] is True and resp["decided_by"] == "alice" and resp["comment"] == "alice: looks good"
    assert page.locator(f"#approval-{rid}").count() == 0
    ctx.close()


def test_answer_questions_with_options_and_free_text(system, browser, sing):
    hitl, url = system
    q1, q2 = ulid(), ulid()
    sing.publish("question_requests", {"id": q1, "agent_id": "agent-7", "question": "Which DB?",
                                       "options": ["postgres", "sqlite"]})
    sing.publish("question_requests", {"id": q2, "agent_id": "agent-7", "question": "Why?"})
    wait_pending(hitl, "question", q1)
    wait_pending(hitl, "question", q2)
    ctx, page = signed_in(browser, url, "bob")
    page.goto(url + "/questions")
    page.locator(f"#question-{q1} input[value=postgres]").check()
    page.locator(f"#question-{q1} button").click()
    page.locator(f"#question-{q2} textarea").fill("because <b>it</b> is faster")
    page.locator(f"#question-{q2} button").click()
    a1 = sing.await_reply("question_responses", q1, timeout=10)
    a2 = sing.await_reply("question_responses", q2, timeout=10)
    assert a1["response"] == "postgres" and a1["answered_by"] == "bob"
    assert a2["response"] == "because <b>it</b> is faster"
    ctx.close()


def test_post_without_csrf_token_is_refused(system, browser, sing):
    hitl, url = system
    rid = ask_approval(sing, hitl)
    ctx, page = signed_in(browser, url)
    r = page.request.post(f"{url}/approvals/{rid}", form={"decision": "approve"}, max_redirects=0)
    assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post(f"{url}/approvals/{rid}", form={"decision": "approve", "csrf_token": "forged"},
                          max_redirects=0)
    assert r.status == 403
    r = page.request.post(f"{url}/login", form={"username": "alice", "password": PW}, max_redirects=0)
    assert r.status == 403
    assert any(i["request_id"] == rid for i in hitl.pending("approval")), "the request must still be pending"
    ctx.close()


def test_diff_with_script_is_shown_as_text(system, browser, sing):
    hitl, url = system
    evil = "+<script>window.__pwned = 1</script>\n+<img src=x onerror=\"window.__pwned = 2\">\n"
    rid = ulid()
    sing.publish("approval_requests", {"id": rid, "agent_id": "<b>agent</b>", "file_path": "x.html", "diff": evil,
                                       "reason": "<script>window.__pwned = 3</script>"})
    wait_pending(hitl, "approval", rid)
    ctx, page = signed_in(browser, url)
    item = page.locator(f"#approval-{rid}")
    assert "<script>window.__pwned = 1</script>" in item.locator("pre.diff").inner_text()
    assert "<script>window.__pwned = 3</script>" in item.locator(".reason").inner_text()
    assert page.evaluate("window.__pwned") is None
    csp = page.request.get(url + "/approvals").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "style-src 'self'" in csp
    assert item.locator("script").count() == 0 and item.locator("img").count() == 0
    ctx.close()


def test_expired_approval_gets_its_automatic_deny(system, sing):
    hitl, _url = system
    rid = ulid()
    sing.publish("approval_requests", {"id": rid, "agent_id": "agent-7", "file_path": "a.py", "diff": DIFF,
                                       "timeout_s": 1})
    resp = sing.await_reply("approval_responses", rid, timeout=15)
    assert resp["approved"] is False and resp["decided_by"] == "nexus:timeout"
    assert "no decision within 1 s" in resp["comment"]


def test_two_of_three_quorum_decides_only_at_the_second_approval(system, browser, sing):
    hitl, url = system
    rid = ask_approval(sing, hitl, quorum=2)
    ctx_a, page_a = signed_in(browser, url, "alice")
    page_a.locator(f"#approval-{rid} button[value=approve]").click()
    assert "1 of 2" in page_a.locator("#msg").inner_text()
    time.sleep(0.5)  # a pass of the worker: still nothing published
    with pytest.raises(TimeoutError):
        sing.await_reply("approval_responses", rid, timeout=0.5)
    page_a.goto(url + "/approvals")
    page_a.locator(f"#approval-{rid} button[value=approve]").click()
    assert "already voted" in page_a.locator("#msg").inner_text()
    ctx_b, page_b = signed_in(browser, url, "bob")
    assert "alice approved" in page_b.locator(f"#approval-{rid} .votes").inner_text()
    page_b.locator(f"#approval-{rid} button[value=approve]").click()
    resp = sing.await_reply("approval_responses", rid, timeout=10)
    assert resp["approved"] is True and resp["decided_by"] == "alice,bob"
    ctx_a.close()
    ctx_b.close()


def test_redelivery_after_a_crash_never_decides_twice(s, system, sing):
    """Decided in nexus but the process died before publishing: the message comes back, exactly one response."""
    hitl, _url = system
    rid = ask_approval(sing, hitl)
    with connect(owner_conninfo(s, "nexus")) as nx:
        # the decision is committed, but publishing never happened (the process 'died' here)
        nx.execute("UPDATE nexus.hitl_items SET status = 'decided', decision = nexus._hitl_response(i, true, NULL, 'carol') "
                   "FROM nexus.hitl_items i WHERE i.request_id = %s AND nexus.hitl_items.request_id = i.request_id",
                   (rid,))
        held = nx.execute("SELECT msg_id, read_ct FROM nexus.hitl_items WHERE request_id = %s", (rid,)).fetchone()
    # its lease runs out: the message is visible again and is read with a new read_ct
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        sq.execute("SELECT bus.set_lease('approval_requests', %s, %s, 0)", (held["msg_id"], held["read_ct"]))
    resp = sing.await_reply("approval_responses", rid, timeout=10)
    assert resp["decided_by"] == "carol"
    time.sleep(0.6)
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        n = sq.execute("SELECT count(*) AS n FROM pgmq.q_approval_responses WHERE message->>'request_id' = %s",
                       (rid,)).fetchone()["n"]
        a = sq.execute("SELECT count(*) AS n FROM pgmq.a_approval_responses WHERE message->>'request_id' = %s",
                       (rid,)).fetchone()["n"]
    assert n + a == 1


def test_dashboard_shows_the_system_and_replays_a_dead_letter(s, system, browser, sing, admin):
    hitl, url = system
    admin("postgres").execute("SELECT ops.report_schedules()")  # what pg_cron pushes each minute, now
    qid = ulid()
    question = {"id": qid, "type": "question_request", "agent_id": "agent-9", "question": "replayed?"}
    # as bus._bury writes it (no service may send to dead_letters): the operator writes one by hand here
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        sq.execute("SELECT pgmq.send('dead_letters', %s, %s)",
                   (Jsonb({"queue": "question_requests", "msg_id": 1, "message": question, "error": "boom <script>",
                           "attempts": 5, "sender": "svc_singularity"}),
                    Jsonb({"sender": "svc_singularity", "dead_letter_of": "question_requests"})))
    ctx, page = signed_in(browser, url)
    page.goto(url + "/dashboard")
    assert "approval_requests" in page.locator("#queues").inner_text()
    assert int(page.locator("#dlq-count").inner_text()) >= 1
    assert page.locator("svg").count() >= 1
    schedules = page.locator("#schedules").inner_text()
    assert "singularity:drain_outbox" in schedules and "postgres:report_schedules" in schedules
    assert "dead_letters" in page.locator("#alerts").inner_text()  # the dead letter above, with its fix
    assert "orchestrator dlq list" in page.locator("#alerts").inner_text()
    row = page.locator("#dead-letters tr", has_text="boom <script>")
    row.locator("button").click()
    assert "replayed as msg" in page.locator("#msg").inner_text()
    wait_pending(hitl, "question", qid)
    page.goto(url + "/dashboard")
    decisions = page.locator("#hitl").inner_text()
    assert "question" in decisions and "built-in method" not in decisions, decisions
    assert any(cell.isdigit() for cell in decisions.split()), f"the items column shows counts: {decisions}"
    metrics = page.request.get(url + "/metrics")
    assert metrics.status == 200
    body = metrics.text()
    assert 'bus_queue_depth{queue="approval_requests"}' in body and "# TYPE nexus_llm_calls_total counter" in body
    assert 'nexus_hitl_items{kind="question",status="pending"}' in body
    assert 'pg_cron_job_last_run_failed{job="singularity:drain_outbox"}' in body and "pg_cron_report_age_seconds" in body
    assert "_24h" not in body and "quantile=" not in body  # counters and histograms, not windowed gauges
    ctx.close()


def test_metrics_accepts_a_bearer_token(system, browser):
    _hitl, url = system  # the system runs with NEXUS_METRICS_TOKEN=t0ken
    ctx = browser.new_context()
    assert ctx.request.get(url + "/metrics", headers={"authorization": "Bearer nope"}).status == 401
    r = ctx.request.get(url + "/metrics", headers={"authorization": "Bearer t0ken"})
    assert r.status == 200 and "bus_queue_visible" in r.text()
    ctx.close()


# -- sign-in throttling, proxies, tokens, hosts, status text ------------------------------------------------
# Every address in 127.0.0.0/8 reaches the page over loopback, so httpx clients bound to 127.0.0.N are N
# different clients as the page sees them (no proxy header involved). Chromium always comes from 127.0.0.1.

def client_at(url: str, addr: str = "127.0.0.1", **kw) -> httpx.Client:
    """An HTTP client whose connections come from ADDR."""
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=addr), **kw)


def try_sign_in(client: httpx.Client, user: str, password: str, headers: dict | None = None) -> httpx.Response:
    """GET /login (for its CSRF cookie) then POST the form, as a browser would; no redirect followed."""
    client.get("/login", headers=headers)
    return client.post("/login", data={"username": user, "password": password,
                                        "csrf_token": client.cookies.get("nexus_login_csrf", "")}, headers=headers)


@pytest.fixture
def fresh_throttle(s):
    """No failed sign-ins or known browsers recorded before or after the test (the state is shared, in SQL)."""
    def clear():
        with connect(owner_conninfo(s, "nexus")) as c:
            for t in ("nexus.signin_failures", "nexus.signin_devices"):
                if c.execute("SELECT to_regclass(%s) AS t", (t,)).fetchone()["t"]:
                    c.execute(f"DELETE FROM {t}")
    clear()
    yield
    clear()


def recorded_addresses(s) -> set[str]:
    with connect(owner_conninfo(s, "nexus")) as c:
        return {str(r["addr"]) for r in c.execute("SELECT DISTINCT host(addr) AS addr FROM nexus.signin_failures")}


@pytest.fixture
def page_with_env(s, monkeypatch):
    """page_with_env(NAME=value...): a second hitl page of its own, built from these environment variables."""
    from orchestrator.nexus.hitl_worker import build

    stops = []

    def make(**env) -> str:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        _hitl, web, worker = build(s, host="127.0.0.1", port=0)
        web.start()
        stops.append(worker.on_stop)
        return web.url

    yield make
    for stop in stops:
        stop()


def test_failed_sign_ins_are_throttled_per_user_and_address_across_pages(system, page_with_env, fresh_throttle):
    """Five failures for one user from one address hold that pair back, on every page sharing the database
    (the throttle lives in SQL); the same user from another address is not held back."""
    _hitl, url = system
    other = page_with_env()  # a second daemon's page
    with client_at(other, "127.0.0.5") as a, client_at(url, "127.0.0.5") as b:
        codes = [try_sign_in(a, "dave", f"wrong-{i}").status_code for i in range(5)]
        assert codes == [303] * 5
        r = try_sign_in(b, "dave", "wrong-5")  # the other page knows about the five failures
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text and "try again in" in r.text
        r = try_sign_in(b, "dave", PW)  # even the right password waits: the throttle is not an oracle
        assert r.status_code == 429
    with client_at(url, "127.0.0.6") as c:
        r = try_sign_in(c, "dave", PW)
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_a_spray_at_30_users_from_one_address_is_throttled(system, fresh_throttle):
    """Twenty failures from one address, whatever the user names, hold back that address's new browsers."""
    _hitl, url = system
    with client_at(url, "127.0.0.3") as a:
        codes = [try_sign_in(a, f"user{i:02d}", "guess-1234").status_code for i in range(30)]
        assert codes == [303] * 20 + [429] * 10
        r = try_sign_in(a, "alice", PW)
        assert r.status_code == 429 and "from your address" in r.text


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(s, system, fresh_throttle):
    """With NEXUS_TRUSTED_PROXIES unset no peer is a proxy, not even 127.0.0.1: a client cannot pose as many
    addresses to dodge the per-address throttle, nor sign in while its real address is held back."""
    _hitl, url = system
    with client_at(url, "127.0.0.1") as a:
        codes = [try_sign_in(a, f"user{i:02d}", "guess-1234",
                             headers={"x-forwarded-for": f"198.51.100.{i}"}).status_code for i in range(30)]
        assert codes == [303] * 20 + [429] * 10
        r = try_sign_in(a, "alice", PW, headers={"x-forwarded-for": "198.51.100.200"})
        assert r.status_code == 429
    assert recorded_addresses(s) == {"127.0.0.1"}


def test_x_forwarded_for_is_honoured_from_a_configured_proxy(s, system, page_with_env, fresh_throttle):
    """NEXUS_TRUSTED_PROXIES lists the proxies: behind one, the client is the right-most address that is not a
    proxy itself; a peer outside the list is its own client, whatever header it sends."""
    url = page_with_env(NEXUS_TRUSTED_PROXIES="127.0.0.8/32, 10.0.0.0/8")
    with client_at(url, "127.0.0.8") as proxy:
        xff = {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.1.2.3"}  # spoofed, the client, an inner proxy
        codes = [try_sign_in(proxy, "dave", f"wrong-{i}", headers=xff).status_code for i in range(6)]
        assert codes == [303] * 5 + [429]
        assert recorded_addresses(s) == {"203.0.113.7"}
        # another client behind the same proxy is not held back by the first one's failures
        r = try_sign_in(proxy, "dave", PW, headers={"x-forwarded-for": "203.0.113.8"})
        assert r.status_code == 303 and r.headers["location"] == "/"
    with client_at(url, "127.0.0.9") as direct:
        try_sign_in(direct, "dave", "wrong-x", headers={"x-forwarded-for": "203.0.113.9"})
    assert recorded_addresses(s) == {"203.0.113.7", "127.0.0.9"}


def test_a_bad_trusted_proxies_setting_stops_the_page_with_the_fix(s, monkeypatch):
    from orchestrator.nexus.hitl_worker import build

    monkeypatch.setenv("NEXUS_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example")
    with pytest.raises(SystemExit, match="NEXUS_TRUSTED_PROXIES.*proxy.example"):
        build(s, host="127.0.0.1", port=0)


def test_a_lockout_does_not_keep_the_real_user_or_others_out(system, browser, fresh_throttle):
    """An attacker's failures for alice from its own address leave alice (elsewhere) and bob free to sign in."""
    _hitl, url = system
    with client_at(url, "127.0.0.4") as attacker:
        codes = [try_sign_in(attacker, "alice", f"guess-{i}").status_code for i in range(6)]
        assert codes == [303] * 5 + [429]
    for user in ("alice", "bob"):
        ctx, page = signed_in(browser, url, user)  # lands on /approvals, signed in
        assert user in page.locator("nav").inner_text()
        ctx.close()


def test_a_browser_signed_in_before_is_not_held_back_by_a_spray(system, browser, fresh_throttle):
    """A spray from the address everyone shares holds back new browsers there, not one its user signed in with."""
    _hitl, url = system
    ctx_b, page_b = signed_in(browser, url, "bob")
    page_b.locator("nav button").click()  # sign out
    page_b.locator("#signin").wait_for(state="visible")
    with client_at(url, "127.0.0.1") as attacker:
        codes = [try_sign_in(attacker, f"user{i:02d}", "guess-1234").status_code for i in range(21)]
        assert codes[-1] == 429
    ctx_c = browser.new_context()
    page_c = ctx_c.new_page()
    page_c.goto(url + "/login")
    page_c.fill("#username", "carol")
    page_c.fill("#password", PW)
    page_c.click("#signin")
    err = page_c.locator("#error")
    err.wait_for(state="visible", timeout=10_000)
    assert "from your address" in err.inner_text() and "signed in with before" in err.inner_text()
    ctx_c.close()
    page_b.fill("#username", "bob")
    page_b.fill("#password", PW)
    page_b.click("#signin")
    page_b.wait_for_url(url + "/approvals")
    ctx_b.close()


def test_status_text_comes_only_from_the_server(system, browser, sing):
    """?msg= (or any query text) is never shown; the page's own notices still are."""
    hitl, url = system
    ctx, page = signed_in(browser, url)
    for path in ("/approvals", "/questions", "/dashboard"):
        page.goto(url + path + "?msg=%3Cscript%3Ex%3C/script%3ESession+expired%3A+call+555-0100")
        assert page.locator("#msg").count() == 0
        assert "555-0100" not in page.content()
    with client_at(url) as c:
        c.cookies.set("nexus_session", next(k["value"] for k in ctx.cookies() if k["name"] == "nexus_session"))
        r = c.get("/approvals?msg=%3Cscript%3Ealert(1)%3C/script%3E&error=PHISH")
        assert r.status_code == 200 and "<script>alert" not in r.text and "alert(1)" not in r.text
        r = c.get("/login?error=%3Cb%3EPHISH%3C/b%3E&next=/approvals")
        assert "PHISH" not in r.text
    rid = ask_approval(sing, hitl)
    page.goto(url + "/approvals")
    page.locator(f"#approval-{rid} button[value=approve]").click()
    assert page.locator("#msg").inner_text() == f"{rid}: decided"
    page.reload()
    assert page.locator("#msg").count() == 0, "a notice is shown once"
    ctx.close()


def test_non_ascii_or_malformed_tokens_get_403_never_500(system, browser, monkeypatch):
    _hitl, url = system
    monkeypatch.setenv("NEXUS_METRICS_TOKEN", "t0ken")
    with client_at(url) as c:
        c.get("/login")
        good = c.cookies["nexus_login_csrf"]
        r = c.post("/login", data={"username": "alice", "password": PW, "csrf_token": "jöhn"})
        assert r.status_code == 403 and "reload the page" in r.text
        r = c.post("/login", data={"username": "alice", "password": PW, "csrf_token": good},
                   headers={"cookie": "nexus_login_csrf=jöhn".encode()})
        assert r.status_code == 403 and "reload the page" in r.text
        r = c.post("/login", files={"csrf_token": ("x.txt", b"abc")}, data={"username": "alice", "password": PW})
        assert r.status_code == 403
        r = c.get("/metrics", headers={"authorization": "Bearer töken".encode()})
        assert r.status_code == 403 and "NEXUS_METRICS_TOKEN" in r.text
        assert c.get("/metrics", headers={"authorization": "Bearer t0ken"}).status_code == 200
        r = c.get("/approvals", headers={"cookie": "nexus_session=ö€".encode()})
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    ctx, page = signed_in(browser, url)
    r = page.request.post(f"{url}/approvals/whatever", form={"decision": "approve", "csrf_token": "tök€n"},
                          max_redirects=0)
    assert r.status == 403 and "reload the page" in r.text()
    ctx.close()


def test_a_wrong_host_gets_400_naming_the_setting(system, page_with_env):
    _hitl, url = system
    port = url.rsplit(":", 1)[1]
    with client_at(url) as c:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            r = c.get("/login", headers={"host": host})
            assert r.status_code == 400 and "NEXUS_WEB_HOSTS" in r.text, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST"):
            assert c.get("/login", headers={"host": host}).status_code == 200, host
    other = page_with_env(NEXUS_WEB_HOSTS="nexus.example.org, localhost")
    with client_at(other) as c:
        assert c.get("/login", headers={"host": "nexus.example.org"}).status_code == 200
        assert c.get("/login", headers={"host": "localhost"}).status_code == 200
        r = c.get("/login")  # 127.0.0.1 is no longer listed
        assert r.status_code == 400 and "NEXUS_WEB_HOSTS" in r.text


def test_the_operator_unblocks_a_user_name(system, fresh_throttle):
    _hitl, url = system
    with client_at(url, "127.0.0.12") as c:
        assert [try_sign_in(c, "dave", f"wrong-{i}").status_code for i in range(6)] == [303] * 5 + [429]
        out = run_cli("nexus", "user", "unblock", "dave", check=True).stdout
        assert "user dave: 5 failed sign-in(s) forgotten" in out
        assert try_sign_in(c, "dave", PW).status_code == 303
    bad = run_cli("nexus", "user", "unblock", "--addr", "not-an-address")
    assert bad.returncode == 1 and "is not an IP address" in bad.stderr
