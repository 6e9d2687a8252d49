"""The operator console (issue 16) in a real headless Chromium: queues, dead letters, workers, schedules,
LLM calls and decisions, live updates, the CSP (no violation on any page) and a phone's viewport.

With NEXUS_SCREENSHOTS=DIR, the phone and desktop screenshots of each page are written to DIR (docs/ holds
the ones docs/nexus.md shows).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from psycopg.types.json import Jsonb

from orchestrator.core.heartbeat import beat
from orchestrator.core.messages import ulid
from orchestrator.core.supervisor import Supervisor
from orchestrator.infra.db import connect, owner_conninfo
from orchestrator.nexus.passwords import hash_password

PW = "correct-horse-1"
PAGES = ("/queues", "/queues/llm_requests", "/dead-letters", "/workers", "/schedules", "/calls", "/decisions",
         "/dashboard", "/approvals", "/questions")
SHOTS = os.environ.get("NEXUS_SCREENSHOTS")
PHONE_SHOTS = ("/queues/llm_requests", "/schedules", "/calls")


@pytest.fixture(scope="module")
def system(s):
    """The hitl worker and its page (with the console) on a free port; one user."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("TRUNCATE nexus.sessions")
        c.execute("SELECT nexus.user_set('olga', %s)", (hash_password(PW),))
    from orchestrator.nexus.hitl_worker import build

    hitl, web, worker = build(s, host="127.0.0.1", port=0)
    web.start()
    sup = Supervisor([worker], grace_s=5)
    sup.start()
    yield hitl, web.url
    sup.request_stop()
    sup.shutdown()


def signed_in(browser, url, **ctx_kw):
    """A signed-in page that records every console error and CSP violation in page.problems."""
    ctx = browser.new_context(**ctx_kw)
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    page.problems = []
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.goto(url + "/login")
    page.fill("#username", "olga")
    page.fill("#password", PW)
    page.click("#signin")
    page.wait_for_url(url + "/approvals")
    return ctx, page


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def data(s, system):
    """30 llm_requests (27 waiting, 1 in flight, 2 archived), calls of two models over three days, two
    decisions, a heartbeat from this process (its supervisor runs the hitl worker)."""
    with connect(owner_conninfo(s, "shared_queue")) as c:
        for q in ("llm_requests", "dead_letters"):
            c.execute("SELECT pgmq.purge_queue(%s)", (q,))
        c.execute("DELETE FROM pgmq.a_llm_requests")
        for i in range(30):
            c.execute("SELECT pgmq.send('llm_requests', %s)", (Jsonb({
                "id": f"req-{i:02d}", "type": "llm_request", "agent_id": f"agent-{i % 3}", "task_type": "chat",
                "messages": [{"role": "user", "content": f"question {i} <script>x</script>"}]}),))
        c.execute("SELECT pgmq.archive('llm_requests', msg_id) FROM pgmq.q_llm_requests "
                  "WHERE message->>'id' IN ('req-00', 'req-01')")
        c.execute("SELECT pgmq.set_vt('llm_requests', msg_id, 600) FROM pgmq.q_llm_requests WHERE message->>'id' = 'req-02'")
    with connect(owner_conninfo(s, "nexus")) as c:
        c.execute("TRUNCATE nexus.llm_calls")
        c.execute("""INSERT INTO nexus.llm_calls (request_id, agent_id, model, tokens_in, tokens_out, latency_ms, cost,
                                                  status, error, created_at)
                     SELECT 'call-' || i, 'agent-' || (i % 2), CASE WHEN i % 3 = 0 THEN 'gpt-x' ELSE 'claude-y' END,
                            100 + i, 20, 300 + i, 0.01 * i, CASE WHEN i % 5 = 0 THEN 'error' ELSE 'ok' END,
                            CASE WHEN i % 5 = 0 THEN 'provider said 500' END, now() - make_interval(days => i % 3)
                       FROM generate_series(1, 40) i""")
        c.execute("TRUNCATE nexus.hitl_decisions, nexus.hitl_items")
        c.execute("""INSERT INTO nexus.hitl_items (request_id, kind, queue, msg_id, read_ct, lease_until, reply_to,
                                                   agent_id, payload, status, decided_at)
                     VALUES ('ap-1', 'approval', 'approval_requests', 1, 1, now(), 'approval_responses', 'agent-1',
                             '{"file_path": "app.py"}', 'published', now()),
                            ('qu-1', 'question', 'question_requests', 2, 1, now(), 'question_responses', 'agent-2',
                             '{"question": "which db?"}', 'published', now())""")
        c.execute("INSERT INTO nexus.hitl_decisions (request_id, decided_by, approved, comment) "
                  "VALUES ('ap-1', 'alice', false, 'too risky')")
        c.execute("INSERT INTO nexus.hitl_decisions (request_id, decided_by, response) VALUES ('qu-1', 'bob', 'postgres')")
    hitl, _url = system
    beat(hitl.bus, "console-test", "nexus", {"slots": 2})
    return True


def test_queue_page_lists_searches_pages_and_shows_json(system, browser, data):
    _hitl, url = system
    ctx, page = signed_in(browser, url)
    page.goto(url + "/queues")
    row = page.locator("#queues tr", has_text="llm_requests")
    assert row.locator("td").nth(1).inner_text() == "27" and row.locator("td").nth(2).inner_text() == "1"
    row.locator("a").click()
    page.wait_for_url(url + "/queues/llm_requests")
    assert page.locator("#messages tr[id^=msg-]").count() == 25
    assert "page 1 of 2 · 27 in all" in page.locator("#pager").inner_text()
    page.click("#next")
    expect(page.locator("#pager")).to_contain_text("page 2 of 2")  # waits for the next page (a click does not)
    assert page.locator("#messages tr[id^=msg-]").count() == 2
    page.fill("#q", "agent-1")
    page.locator("#search button").click()
    page.wait_for_url("**q=agent-1**")
    assert page.locator("#messages tr[id^=msg-]").count() == 9  # agent-1: i = 4, 7, ... 28 (not 1, archived)
    page.fill("#q", "req-17")
    page.locator("#search button").click()
    page.wait_for_url("**q=req-17**")
    rows = page.locator("#messages tr[id^=msg-]")
    expect(rows).to_have_count(1)
    rows.locator("summary").click()
    assert '"question 17 <script>x</script>"' in rows.locator("pre").inner_text()  # JSON, shown as text
    page.click("#tab-in_flight")
    page.wait_for_url("**state=in_flight**")
    expect(page.locator("#messages tr[id^=msg-]")).to_have_count(0)  # req-17 is not in flight
    page.goto(url + "/queues/llm_requests?state=in_flight")
    assert "req-02" in page.locator("#messages").inner_text()
    page.goto(url + "/queues/llm_requests?state=archived")
    assert page.locator("#messages tr[id^=msg-]").count() == 2
    page.goto(url + "/queues/llm_requests?state=waiting&q=req-05")
    msg_id = page.locator("#messages tr[id^=msg-] td").first.inner_text()
    page.goto(url + f"/queues/llm_requests?q={msg_id}")
    assert "req-05" in page.locator("#messages").inner_text()  # search by msg_id too
    page.goto(url + "/queues/no_such_queue")
    assert "no queue named no_such_queue" in page.locator("#error").inner_text()
    assert page.problems == []
    ctx.close()


def bury(s, queue: str, message: dict, sender: str, error: str) -> None:
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        sq.execute("SELECT pgmq.send('dead_letters', %s, %s)",
                   (Jsonb({"queue": queue, "msg_id": 1, "message": message, "error": error, "attempts": 5,
                           "sender": sender}), Jsonb({"sender": sender, "dead_letter_of": queue})))


def test_replay_many_says_why_one_is_refused_and_purge_asks_first(s, system, browser, data):
    hitl, url = system
    good = {"id": ulid(), "type": "question_request", "agent_id": "agent-9", "question": "replayed?"}
    bury(s, "question_requests", good, "svc_singularity", "timed out")
    # genesis may not send questions: the replay re-checks the flow table for the sender and refuses it
    bury(s, "question_requests", {**good, "id": ulid()}, "svc_genesis", "bad sender")
    ctx, page = signed_in(browser, url)
    page.goto(url + "/dead-letters")
    rows = page.locator("#dead-letters tr[id^=dl-]")
    assert rows.count() == 2 and "timed out" in page.locator("#dead-letters").inner_text()
    for i in range(2):
        rows.nth(i).locator("input[type=checkbox]").check()
    page.click("#replay")
    expect(page.locator("#msg")).to_contain_text("replayed")
    text = page.locator("#msg").inner_text()
    assert "replayed 1:" in text and "not replayed 1:" in text, text
    assert "svc_genesis" in text or "may not" in text, text  # the reason, from SQL
    deadline = time.monotonic() + 10
    while not any(i["request_id"] == good["id"] for i in hitl.pending("question")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(i["request_id"] == good["id"] for i in hitl.pending("question"))
    assert page.locator("#dead-letters tr[id^=dl-]").count() == 1  # the refused one stays
    page.click("#purge")
    expect(page.locator("h1")).to_contain_text("Purge 1 dead letter?")
    page.click("#cancel")
    # nothing purged without the confirmation (expect retries: the click does not wait for the next page)
    expect(page.locator("#dead-letters tr[id^=dl-]")).to_have_count(1)
    page.click("#purge")
    page.click("#confirm-purge")
    expect(page.locator("#msg")).to_contain_text("purged 1 dead letters")
    expect(page.locator("#dead-letters tr[id^=dl-]")).to_have_count(0)
    assert page.problems == []
    ctx.close()


def test_workers_show_every_daemon(system, browser, data):
    _hitl, url = system
    ctx, page = signed_in(browser, url)
    page.goto(url + "/workers")
    row = page.locator("#workers tr", has_text="console-test")
    cells = row.inner_text()
    assert str(os.getpid()) in cells and "hitl×1" in cells and "0.1.0" in cells and "healthy" in cells, cells
    assert page.problems == []
    ctx.close()


def test_schedules_in_words_with_runs_and_run_now(s, system, browser, admin):
    _hitl, url = system
    admin("postgres").execute("SELECT ops.report_schedules()")
    ctx, page = signed_in(browser, url)
    page.goto(url + "/schedules")
    row = page.locator("#job-postgres-report_schedules")
    assert "Every minute" in row.inner_text()
    assert row.locator("ul.runs li").count() >= 1 and " ms" in row.locator("ul.runs").inner_text()
    job = "centralcloud:heartbeats"
    page.locator("#job-centralcloud-heartbeats button.run-now").click()
    expect(page.locator("#msg")).to_contain_text("run requested")
    assert "requested by olga" in page.locator("#job-centralcloud-heartbeats").inner_text()
    pg = admin("postgres")
    try:
        pg.execute("SELECT ops.report_schedules()")
        one_off = pg.execute("SELECT o.command, o.username, o.database FROM cron.job o WHERE o.jobname = %s",
                             ("runnow:" + job,)).fetchone()
        original = pg.execute("SELECT command, username, database FROM cron.job WHERE jobname = %s", (job,)).fetchone()
        assert one_off == original, (one_off, original)  # the job's own command, as its own user
    finally:
        pg.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", ("runnow:" + job,))
    r = page.request.post(url + "/schedules/run", form={"job": job}, max_redirects=0)
    assert r.status == 403  # no CSRF token
    assert row.locator("button.run-now").count() == 0 and "on schedule only" in row.inner_text()
    assert page.problems == []
    ctx.close()


def test_run_now_never_runs_a_superuser_job_even_if_the_bus_owner_asks(s, admin):
    """The job names reach the superuser's ops.report_schedules from shared_queue, whose owner could write
    any request: a job run as a superuser is never scheduled from one."""
    with connect(owner_conninfo(s, "shared_queue")) as sq:
        sq.execute("INSERT INTO bus.schedule_run_requests (jobname, requested_by) VALUES ('postgres:prune_cron_history', 'x')")
    pg = admin("postgres")
    try:
        pg.execute("SELECT ops.report_schedules()")
        assert pg.execute("SELECT count(*) AS n FROM cron.job WHERE jobname = 'runnow:postgres:prune_cron_history'"
                          ).fetchone()["n"] == 0
    finally:
        pg.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'runnow:postgres:prune_cron_history'")


def test_calls_filter_and_cost_charts(system, browser, data):
    _hitl, url = system
    ctx, page = signed_in(browser, url)
    page.goto(url + "/calls")
    assert "40 in all" in page.locator("#pager").inner_text()
    page.select_option("#f-model", "gpt-x")
    page.select_option("#f-status", "error")
    page.click("#filter")
    page.wait_for_url("**model=gpt-x**")
    body = page.locator("#calls").inner_text()
    assert "claude-y" not in body and "provider said 500" in body
    assert page.locator("#calls tr").count() - 1 == 2  # i = 15, 30
    charts = page.locator("#cost-charts svg")
    assert charts.count() == 3
    titles = page.locator("#cost-charts svg rect title").all_text_contents()
    assert any("gpt-x" in t and "$" in t for t in titles), titles  # values on hover
    assert page.locator("#cost-charts svg text.tick").count() > 5  # axes with labels
    assert "claude-y" in page.locator("#per-model").inner_text()
    assert page.problems == []
    ctx.close()


def test_decisions_with_who_when_comment_and_filters(system, browser, data):
    _hitl, url = system
    ctx, page = signed_in(browser, url)
    page.goto(url + "/decisions")
    text = page.locator("#decisions").inner_text()
    assert "alice" in text and "too risky" in text and "rejected" in text and "postgres" in text
    page.fill("#f-by", "bob")
    page.click("#filter")
    page.wait_for_url("**by=bob**")
    text = page.locator("#decisions").inner_text()
    assert "bob" in text and "alice" not in text
    page.select_option("#f-kind", "approval")
    page.click("#filter")
    expect(page.locator("#decisions")).to_contain_text("no decisions matching")
    assert page.problems == []
    ctx.close()


def wait_until(check, timeout: float) -> None:
    """Poll CHECK from Python (the page's CSP refuses the eval behind playwright's wait_for_function)."""
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_live_updates_without_reload_and_pause_when_hidden(s, system, browser, data):
    _hitl, url = system
    ctx, page = signed_in(browser, url)
    page.goto(url + "/queues")
    page.evaluate("window.__same_document = 1")
    page.locator("#live").wait_for(state="attached")
    row = page.locator("#queues tr", has_text="llm_requests")
    before = int(row.locator("td").nth(1).inner_text())
    with connect(owner_conninfo(s, "shared_queue")) as c:
        c.execute("SELECT pgmq.send('llm_requests', %s)", (Jsonb({
            "id": "req-live", "type": "llm_request", "agent_id": "agent-live", "task_type": "chat",
            "messages": [{"role": "user", "content": "live"}]}),))
    wait_until(lambda: int(row.locator("td").nth(1).inner_text()) == before + 1, 15)
    assert page.evaluate("window.__same_document") == 1  # updated in place, not reloaded
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if r.headers.get("x-live") else None)
    page.evaluate("""Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                     document.dispatchEvent(new Event('visibilitychange'))""")
    assert "paused" in page.locator("#live").inner_text()
    fetched.clear()
    page.wait_for_timeout(6000)
    assert fetched == []  # nothing fetched while hidden
    page.evaluate("""Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                     document.dispatchEvent(new Event('visibilitychange'))""")
    wait_until(lambda: "updated" in page.locator("#live").inner_text(), 10)
    assert fetched, "refreshed at once when visible again"
    assert page.problems == []
    ctx.close()


def test_a_new_approval_appears_without_reload_and_typed_text_is_kept(system, browser, bus_for):
    hitl, url = system
    ctx, page = signed_in(browser, url)
    page.evaluate("window.__same_document = 1")
    sing = bus_for("svc_singularity")
    first, second = ulid(), ulid()
    diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    sing.publish("approval_requests", {"id": first, "agent_id": "agent-live", "file_path": "x", "diff": diff})
    wait_until(lambda: page.locator(f"#approval-{first}").count() == 1, 20)
    page.locator(f"#approval-{first} input[name=comment]").fill("half-typed")
    page.locator("h1").click()  # focus leaves the field: only the typed text keeps the region as it is
    sing.publish("approval_requests", {"id": second, "agent_id": "agent-live", "file_path": "y", "diff": diff})
    wait_until(lambda: any(i["request_id"] == second for i in hitl.pending("approval")), 20)
    page.wait_for_timeout(6000)
    assert page.locator(f"#approval-{first} input[name=comment]").input_value() == "half-typed"
    page.locator(f"#approval-{first} input[name=comment]").fill("")
    page.locator("h1").click()
    wait_until(lambda: page.locator(f"#approval-{second}").count() == 1, 20)
    assert page.evaluate("window.__same_document") == 1
    for rid in (first, second):
        page.locator(f"#approval-{rid} button[value=reject]").click()
    assert page.problems == []
    ctx.close()


def test_every_page_has_no_csp_violation_and_fits_a_phone(s, system, browser, data):
    _hitl, url = system
    bury(s, "job_requests", {"id": ulid(), "type": "job_request", "code": "print(1)", "language": "python",
                             "mode": "run"}, "svc_singularity", "sandbox: timed out after 30 s (attempt 5 of 5)")
    for kind, kw in (("desktop", {"viewport": {"width": 1280, "height": 900}}),
                     ("phone", {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                                "device_scale_factor": 2})):
        ctx, page = signed_in(browser, url, **kw)
        for path in PAGES:
            page.goto(url + path)
            page.wait_for_load_state("networkidle")
            assert page.locator("#live").count() == 0 or page.locator("#live").inner_text().startswith("live"), path
            if kind == "phone":
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{path} is {overflow}px wider than a phone's screen"
            name = path.strip("/").replace("/", "-")
            if path == "/queues/llm_requests":
                page.locator("#messages summary").first.click()  # a message's JSON, open
            if kind == "desktop" or path in PHONE_SHOTS:
                shot(page, f"{name}-{kind}" if kind == "phone" else name)
        csp = page.request.get(url + "/queues").headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.problems == [], page.problems
        ctx.close()
