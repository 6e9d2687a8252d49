"""Routes of the operator console (issue 16): queues and their messages, dead letters (replay one or many,
purge after a confirmation), workers, schedules (run now), LLM calls and cost, decided approvals and
questions. Every route needs a signed-in session and every form its CSRF token (through the Page's public
methods); the data comes from orchestrator.nexus.console, i.e. from narrow SQL functions only.
"""

from __future__ import annotations

import logging

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from orchestrator.nexus.console import CALL_STATUSES, STATES

log = logging.getLogger(__name__)


def arg(request: Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    """A query parameter, trimmed (at most 200 characters), None when empty or not ALLOWED."""
    v = (request.query_params.get(name) or "").strip()[:200] or None
    return v if v is None or allowed is None or v in allowed else None


def present(**kw) -> dict:
    """The given query arguments that are set (for the pager's links)."""
    return {k: v for k, v in kw.items() if v}


def page_no(request: Request) -> int:
    v = request.query_params.get("page", "1")
    return int(v) if v.isdigit() and len(v) < 7 else 1


class ConsoleRoutes:
    """One method per console route over a Page (sessions, CSRF, templates) and its dashboard's console."""

    def __init__(self, page):
        self.p = page

    @property
    def data(self):
        return self.p.dashboard.console

    def show(self, request: Request, template: str, build) -> Response:
        sess = self.p.page_session(request)
        if not sess:
            return self.p.to_login(request)
        return self.p.page(request, template, sess, **build())

    def queues(self, request: Request) -> Response:
        return self.show(request, "queues.html", lambda: {"queues": self.data.queues()})

    def queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        state = arg(request, "state", STATES) or "waiting"
        search = arg(request, "q")

        def build() -> dict:
            try:
                d = self.data.messages(name, state, search, page_no(request))
            except psycopg.errors.InvalidParameterValue as e:
                return {"error": e.diag.message_primary, "queue": name, "state": state, "q": search, "d": None}
            return {"queue": name, "state": state, "q": search, "d": d, "error": None,
                    "args": present(state=state, q=search)}

        return self.show(request, "queue.html", build)

    def dead_letters(self, request: Request) -> Response:
        queue = arg(request, "queue")
        return self.show(request, "dead_letters.html", lambda: {
            "queue": queue, "d": self.data.dead_letters(queue, page_no(request)), "args": present(queue=queue)})

    async def replay(self, request: Request) -> Response:
        """Replay the checked dead letters, each on its own; the notice lists the new msg ids and, for each
        refused one, why."""
        sess = await run_in_threadpool(self.p.session, request)
        if not sess:
            return self.p.to_login(request)
        form = await request.form()
        if await self.p.checked_form(request, sess) is None:
            return self.p.refuse_csrf()
        ids = [int(v) for v in form.getlist("id") if isinstance(v, str) and v.isdigit() and len(v) < 19][:200]
        if not ids:
            await run_in_threadpool(self.p.notify, request, "nothing replayed: tick the dead letters to replay first")
            return RedirectResponse("/dead-letters", status_code=303)
        out = await run_in_threadpool(self.data.replay_many, ids)
        done = [f"{r['id']} as msg {r['new_id']}" for r in out if r["new_id"] is not None]
        refused = [f"{r['id']}: {r['error']}" for r in out if r["new_id"] is None]
        log.info("dead letters replayed by %s: %d replayed, %d refused", sess["username"], len(done), len(refused))
        text = (f"replayed {len(done)}: {', '.join(done)}" if done else "replayed none")
        if refused:
            text += f" · not replayed {len(refused)}: " + "; ".join(refused)
        await run_in_threadpool(self.p.notify, request, text)
        return RedirectResponse("/dead-letters", status_code=303)

    async def purge(self, request: Request) -> Response:
        """Purge needs two steps: the first POST shows what would go and asks; only confirm=yes purges."""
        sess = await run_in_threadpool(self.p.session, request)
        if not sess:
            return self.p.to_login(request)
        form = await self.p.checked_form(request, sess)
        if form is None:
            return self.p.refuse_csrf()
        queue = (form.get("queue") or "").strip() or None
        if form.get("confirm") != "yes":
            d = await run_in_threadpool(self.data.dead_letters, queue, 1)
            return self.p.page(request, "purge_confirm.html", sess, queue=queue, total=d["pager"]["total"])
        n = await run_in_threadpool(self.data.purge, queue)
        log.info("%s purged %s dead letters%s", sess["username"], n, f" of {queue}" if queue else "")
        await run_in_threadpool(self.p.notify, request, f"purged {n} dead letters" + (f" of {queue}" if queue else "")
                                + " (kept in the dead-letter archive until retention)")
        return RedirectResponse("/dead-letters", status_code=303)

    def workers(self, request: Request) -> Response:
        return self.show(request, "workers.html", lambda: {"workers": self.data.workers()})

    def schedules(self, request: Request) -> Response:
        return self.show(request, "schedules.html", lambda: {"jobs": self.data.schedules()})

    async def run_now(self, request: Request) -> Response:
        sess = await run_in_threadpool(self.p.session, request)
        if not sess:
            return self.p.to_login(request)
        form = await self.p.checked_form(request, sess)
        if form is None:
            return self.p.refuse_csrf()
        job = form.get("job") or ""
        try:
            await run_in_threadpool(self.data.run_now, job, sess["username"])
        except psycopg.errors.InvalidParameterValue as e:
            await run_in_threadpool(self.p.notify, request, f"not run: {e.diag.message_primary}")
            return RedirectResponse("/schedules", status_code=303)
        log.info("%s asked to run schedule %s now", sess["username"], job)
        await run_in_threadpool(self.p.notify, request, f"{job}: run requested; pg_cron runs it once at the next "
                                "minute after its next report (within about two minutes)")
        return RedirectResponse("/schedules", status_code=303)

    def calls(self, request: Request) -> Response:
        model, agent, status = arg(request, "model"), arg(request, "agent"), arg(request, "status", CALL_STATUSES)
        return self.show(request, "calls.html", lambda: {
            "f": {"model": model, "agent": agent, "status": status}, "statuses": CALL_STATUSES,
            "args": present(model=model, agent=agent, status=status),
            "d": self.data.calls(model, agent, status, page_no(request)), "c": self.data.cost_charts()})

    def decisions(self, request: Request) -> Response:
        kind, by, agent = arg(request, "kind", ("approval", "question")), arg(request, "by"), arg(request, "agent")
        return self.show(request, "decisions.html", lambda: {
            "f": {"kind": kind, "by": by, "agent": agent}, "args": present(kind=kind, by=by, agent=agent),
            "d": self.data.decisions(kind, by, agent, page_no(request))})

    def routes(self) -> list[Route]:
        return [
            Route("/queues", self.queues), Route("/queues/{name:str}", self.queue),
            Route("/dead-letters", self.dead_letters), Route("/dead-letters/replay", self.replay, methods=["POST"]),
            Route("/dead-letters/purge", self.purge, methods=["POST"]),
            Route("/workers", self.workers), Route("/schedules", self.schedules),
            Route("/schedules/run", self.run_now, methods=["POST"]),
            Route("/calls", self.calls), Route("/decisions", self.decisions),
        ]
