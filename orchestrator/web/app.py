"""Routes of the HITL page. Every page needs a signed-in session; every form carries a CSRF token.

Sessions live in nexus.sessions (the cookie holds a random token; the database keeps its sha256).
Templates autoescape everything, so request content (diffs, questions, comments) is shown as text.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..hitl import Hitl
from ..passwords import verify_password

log = logging.getLogger(__name__)

COOKIE = "nexus_session"
LOGIN_COOKIE = "nexus_login_csrf"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, text) per line of a unified diff."""
    out = []
    for line in (diff or "").splitlines():
        if line.startswith(("+++", "---")):
            cls = "file"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        out.append((cls, line))
    return out


TEMPLATES.env.filters["diff_lines"] = diff_lines


SECURITY_HEADERS = [
    # no script runs on these pages at all: even an escaping mistake could not execute one
    (b"content-security-policy", b"default-src 'self'; script-src 'none'; style-src 'unsafe-inline'; "
                                 b"img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


class LoginThrottle:
    """At most MAX failed sign-ins per user name and per client address in WINDOW_S (this process)."""

    MAX, WINDOW_S = 5, 300.0

    def __init__(self):
        self.failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self.failures.get(key, []) if now - t < self.WINDOW_S]

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        return any(len(self._recent(k, now)) >= self.MAX for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for k in keys:
            self.failures[k] = [*self._recent(k, now), now]

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self.failures.pop(k, None)


def create_app(hitl: Hitl, pool: ConnectionPool, dashboard=None, *, session_ttl_s: int = 8 * 3600,
               secure_cookies: bool = False) -> Starlette:
    throttle = LoginThrottle()

    def _hash(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def sql(query: str, params: tuple = ()) -> list[dict]:
        with pool.connection() as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def session(request: Request) -> dict | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        with pool.connection() as c:
            return c.execute("SELECT * FROM nexus.session_get(%s)", (_hash(token),)).fetchone()

    def to_login(request: Request) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    async def checked_form(request: Request, sess: dict) -> dict | None:
        form = await request.form()  # the form is read on the event loop; database work goes to the threadpool
        token = form.get("csrf_token") or ""
        if not hmac.compare_digest(str(token), sess["csrf"]):
            return None
        return dict(form)

    def page(request: Request, name: str, sess: dict, **ctx) -> Response:
        return TEMPLATES.TemplateResponse(request, name, {"user": sess["username"], "csrf": sess["csrf"],
                                                          "msg": request.query_params.get("msg"), **ctx})

    def refuse_csrf() -> Response:
        return PlainTextResponse("CSRF token missing or wrong: reload the page and submit the form again.",
                                 status_code=403)

    # -- sign in / out -------------------------------------------------------------------------
    def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = TEMPLATES.TemplateResponse(request, "login.html", {"csrf": token, "user": None,
                                                                  "next": request.query_params.get("next", "/"),
                                                                  "error": request.query_params.get("error")})
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies)
        return resp

    async def login(request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        if not expected or not hmac.compare_digest(str(form.get("csrf_token") or ""), expected):
            return refuse_csrf()
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        keys = (f"user:{username}", f"addr:{request.client.host if request.client else '?'}")
        if throttle.blocked(*keys):
            return PlainTextResponse("too many failed sign-ins; wait 5 minutes and try again", status_code=429)
        stored = (await run_in_threadpool(sql, "SELECT nexus.user_hash(%s) AS h", (username,)))[0]["h"]
        nxt = str(form.get("next") or "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        if not await run_in_threadpool(verify_password, password, stored):
            throttle.failed(*keys)
            return RedirectResponse(f"/login?error=1&next={quote(nxt)}", status_code=303)
        throttle.succeeded(keys[0])  # the address keeps its count: one good account must not unlock guessing others
        token = secrets.token_urlsafe(32)
        await run_in_threadpool(sql, "SELECT nexus.session_create(%s, %s, %s, %s)",
                                (_hash(token), username, secrets.token_urlsafe(32), session_ttl_s))
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, token, max_age=session_ttl_s, httponly=True, samesite="lax", secure=secure_cookies)
        resp.delete_cookie(LOGIN_COOKIE)
        return resp

    async def logout(request: Request) -> Response:
        sess = await run_in_threadpool(session, request)
        if not sess:
            return to_login(request)
        if await checked_form(request, sess) is None:
            return refuse_csrf()
        await run_in_threadpool(sql, "SELECT nexus.session_delete(%s)", (_hash(request.cookies[COOKIE]),))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # -- approvals and questions -------------------------------------------------------------------
    def home(request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303) if session(request) else to_login(request)

    def approvals(request: Request) -> Response:
        sess = session(request)
        if not sess:
            return to_login(request)
        return page(request, "approvals.html", sess, items=hitl.pending("approval"))

    def questions(request: Request) -> Response:
        sess = session(request)
        if not sess:
            return to_login(request)
        return page(request, "questions.html", sess, items=hitl.pending("question"))

    async def decide(request: Request) -> Response:
        sess = await run_in_threadpool(session, request)
        if not sess:
            return to_login(request)
        form = await checked_form(request, sess)
        if form is None:
            return refuse_csrf()
        kind = request.url.path.split("/")[1]
        rid = request.path_params["rid"]
        try:
            if kind == "approvals":
                if form.get("decision") not in ("approve", "reject"):
                    return PlainTextResponse("decision must be approve or reject", status_code=400)
                out = await run_in_threadpool(hitl.decide, rid, sess["username"], approved=form["decision"] == "approve",
                                              comment=str(form.get("comment") or "") or None)
            else:
                out = await run_in_threadpool(hitl.decide, rid, sess["username"],
                                              response=str(form.get("response") or ""))
        except psycopg.errors.InvalidParameterValue as e:
            return RedirectResponse(f"/{kind}?msg={quote(e.diag.message_primary or str(e))}", status_code=303)
        words = {"decided": "decided", "recorded": f"vote recorded ({out.get('approvals')} of {out.get('quorum')} "
                 "approvals so far)", "already_voted": "you already voted on this one",
                 "already_decided": "already decided", "not_found": "no such request"}
        return RedirectResponse(f"/{kind}?msg={quote(f'{rid}: ' + words[out['status']])}", status_code=303)

    # -- dashboard and metrics ---------------------------------------------------------------------
    def dash(request: Request) -> Response:
        sess = session(request)
        if not sess:
            return to_login(request)
        return page(request, "dashboard.html", sess, d=dashboard.snapshot() if dashboard else {})

    async def replay(request: Request) -> Response:
        sess = await run_in_threadpool(session, request)
        if not sess:
            return to_login(request)
        if await checked_form(request, sess) is None:
            return refuse_csrf()
        new_id = await run_in_threadpool(dashboard.replay, int(request.path_params["dlq_id"]))
        log.info("dead letter %s replayed by %s as msg %s", request.path_params["dlq_id"], sess["username"], new_id)
        return RedirectResponse(f"/dashboard?msg={quote(f'dead letter replayed as msg {new_id}')}", status_code=303)

    def metrics(request: Request) -> Response:
        token = os.environ.get("NEXUS_METRICS_TOKEN")
        bearer = request.headers.get("authorization", "")
        if not (token and hmac.compare_digest(bearer, f"Bearer {token}")) and not session(request):
            return PlainTextResponse("sign in, or send Authorization: Bearer $NEXUS_METRICS_TOKEN\n", status_code=401)
        return PlainTextResponse(dashboard.prometheus() if dashboard else "",
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/", home), Route("/login", login_form, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/approvals", approvals), Route("/questions", questions),
        Route("/approvals/{rid:str}", decide, methods=["POST"]), Route("/questions/{rid:str}", decide, methods=["POST"]),
        Route("/dashboard", dash), Route("/dlq/{dlq_id:int}/replay", replay, methods=["POST"]),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
