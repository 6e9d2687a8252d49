"""Routes of the HITL page. Every page needs a signed-in session; every form carries a CSRF token.

Sessions live in nexus.sessions (the cookie holds a random token; the database keeps its sha256).
Signing in: nexus.login_params gives the salt and scrypt parameters (or says the attempt is throttled),
the key is derived here, and nexus.sign_in compares it and starts the session in one call; the page's
role never sees a stored hash. The throttle lives in SQL (docs/nexus.md, "Signing in").
Templates autoescape everything, so request content (diffs, questions, comments) is shown as text, and
notices come from the server (stored on the session), never from the URL.
What the page trusts (host names, proxies) is read once from the environment (nexus.settings).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import threading
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from orchestrator.infra.db import system_id
from orchestrator.nexus.hitl import Hitl
from orchestrator.nexus.passwords import derive_key
from orchestrator.nexus.settings import NET, WebSettings, host_name
from orchestrator.nexus.web.web_console import ConsoleRoutes

log = logging.getLogger(__name__)

COOKIE = "nexus_session"
SYSTEM_HEADER = "x-orchestrator-system"  # on the sign-in page: infra.db.system_id of the nexus database it serves
LOGIN_COOKIE = "nexus_login_csrf"
DEVICE_COOKIE = "nexus_device"      # a browser its user signed in with: not held back by a throttled address
DEVICE_TTL_S = 90 * 86400
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATIC = Path(__file__).parent / "static"  # console.css and console.js (the only style and script the pages load)
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")                  # what secrets.token_urlsafe makes
NEXT_RE = re.compile(r"/(?:[A-Za-z0-9_.~-]+(?:/[A-Za-z0-9_.~-]+)*)?")  # a path of this page, never //host
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(text: str) -> IP | None:
    """An address from a peer or an X-Forwarded-For entry (port, brackets, zone id dropped), or None."""
    t = text.strip()
    if t.startswith("["):
        t = t[1:t.find("]")] if "]" in t else ""
    elif t.count(":") == 1:
        t = t.split(":", 1)[0]
    t = t.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def same_token(given: object, expected: object) -> bool:
    """Two tokens compared as bytes in constant time. Anything but a well-formed token on either side
    (non-ASCII, a file upload, empty, too long) never matches, and never raises."""
    if not (isinstance(given, str) and isinstance(expected, str)
            and TOKEN_RE.fullmatch(given) and TOKEN_RE.fullmatch(expected)):
        return False
    return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))


def safe_next(value: object) -> str:
    """Where to go after signing in: a plain path of this page, else '/'."""
    return value if isinstance(value, str) and NEXT_RE.fullmatch(value) else "/"


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


KNOWN_BROWSER = "A browser you have signed in with before is not held back."
THROTTLED = {
    "user_address": "Too many failed sign-ins for this user name from your address: try again in {wait}. "
                    + KNOWN_BROWSER + " An operator can lift it with `orchestrator nexus user unblock NAME`.",
    "address": "Too many failed sign-ins from your address: try again in {wait}. " + KNOWN_BROWSER
               + " An operator can lift it with `orchestrator nexus user unblock --addr ADDRESS`.",
    "user": "Too many failed sign-ins for this user name: try again in {wait}, or sign in from a browser you have "
            "signed in with before. An operator can lift it with `orchestrator nexus user unblock NAME`.",
    "browser": "Too many failed sign-ins in this browser: try again in {wait}.",
}
LOGIN_ERRORS = {"1": "Wrong user name or password: check both and try again."}


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
    # scripts and styles only from the package's own files under /static (no inline script, style or style
    # attribute): even an escaping mistake could not execute one
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                                 b"form-action 'self'"),
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


class AllowedHosts:
    """ASGI middleware: a request whose Host is not one of HOSTS gets 400 (DNS rebinding, stray names)."""

    def __init__(self, app, hosts: frozenset[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = next((v for k, v in scope["headers"] if k == b"host"), b"")
        name = host_name(raw.decode("latin-1"))
        if name not in self.hosts:
            log.info("hitl page: refused a request for host %r (not in NEXUS_WEB_HOSTS)", raw[:100])
            resp = PlainTextResponse("This page does not answer to the host name in the request. Open it by a name "
                                     "listed in NEXUS_WEB_HOSTS, or have the operator add this name to "
                                     "NEXUS_WEB_HOSTS.\n", status_code=400)
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


class ClientAddress:
    """ASGI middleware: the client's address. X-Forwarded-For counts only when the peer is one of PROXIES;
    then the client is the right-most address in it that is not a proxy itself (entries to its left were
    written by the client and prove nothing)."""

    def __init__(self, app, proxies: tuple[NET, ...]):
        self.app, self.proxies = app, proxies

    def _trusted(self, ip: IP) -> bool:
        return any(ip in net for net in self.proxies)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        peer = scope.get("client")
        ip = client_ip(peer[0]) if peer else None
        if ip is not None and self.proxies and self._trusted(ip):
            hops = [h for k, v in scope["headers"] if k == b"x-forwarded-for" for h in v.decode("latin-1").split(",")]
            for hop in reversed(hops):
                hop_ip = client_ip(hop)
                if hop_ip is None:  # garbage: the last proxy seen is as far as anything is known
                    break
                ip = hop_ip
                if not self._trusted(hop_ip):
                    break
        scope = {**scope, "client": (str(ip or ipaddress.IPv4Address(0)), peer[1] if peer else 0)}
        return await self.app(scope, receive, send)


class Page:
    """The page's routes over the HITL worker, the nexus pool and the dashboard (one method per route)."""

    def __init__(self, hitl: Hitl, pool: ConnectionPool, dashboard=None, *, web: WebSettings | None = None,
                 session_ttl_s: int = 8 * 3600, metrics_token: str | None = None):
        self.hitl, self.pool, self.dashboard = hitl, pool, dashboard
        self.web = web or WebSettings()
        self.session_ttl_s, self.metrics_token = session_ttl_s, metrics_token
        self.scrypt_slots = threading.BoundedSemaphore(4)  # each derivation takes 16 MiB and ~50 ms of a core
        self.system = system_id(getattr(pool, "conninfo", "") or "")  # which system's page this is (SYSTEM_HEADER)

    def _hash(self, token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def sql(self, query: str, params: tuple = ()) -> list[dict]:
        with self.pool.connection() as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def session_token(self, request: Request) -> str | None:
        token = request.cookies.get(COOKIE)
        return token if token and TOKEN_RE.fullmatch(token) else None

    def session(self, request: Request) -> dict | None:
        """The live session of REQUEST (for actions: its notice stays for the next page)."""
        token = self.session_token(request)
        if not token:
            return None
        rows = self.sql("SELECT * FROM nexus.session_get(%s)", (self._hash(token),))
        return rows[0] if rows else None

    def page_session(self, request: Request) -> dict | None:
        """The live session of REQUEST with its pending notice, which is then cleared (a page shows it once)."""
        token = self.session_token(request)
        if not token:
            return None
        rows = self.sql("SELECT * FROM nexus.session_page(%s)", (self._hash(token),))
        return rows[0] if rows else None

    def notify(self, request: Request, text: str) -> None:
        """Leave TEXT (the server's words) for the session's next page."""
        self.sql("SELECT nexus.session_flash(%s, %s)", (self._hash(request.cookies[COOKIE]), text))

    def to_login(self, request: Request) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    async def checked_form(self, request: Request, sess: dict) -> dict | None:
        form = await request.form()  # the form is read on the event loop; database work goes to the threadpool
        if not same_token(form.get("csrf_token"), sess["csrf"]):
            return None
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def page(self, request: Request, name: str, sess: dict, **ctx) -> Response:
        return TEMPLATES.TemplateResponse(request, name, {"user": sess["username"], "csrf": sess["csrf"],
                                                          "msg": sess.get("flash"), **ctx})

    def refuse_csrf(self) -> Response:
        return PlainTextResponse("CSRF token missing, malformed or wrong: reload the page and submit the form again.",
                                 status_code=403)

    # -- sign in / out -------------------------------------------------------------------------
    def login_page(self, request: Request, nxt: str, error: str | None, status_code: int = 200,
                   headers: dict | None = None) -> Response:
        token = secrets.token_urlsafe(24)
        resp = TEMPLATES.TemplateResponse(request, "login.html", {"csrf": token, "user": None, "next": nxt,
                                                                  "error": error}, status_code=status_code,
                                          headers=headers)
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=self.web.secure_cookies)
        resp.headers[SYSTEM_HEADER] = self.system
        return resp

    def login_form(self, request: Request) -> Response:
        # only fixed texts: the query names one, it never supplies one
        return self.login_page(request, safe_next(request.query_params.get("next")),
                          LOGIN_ERRORS.get(request.query_params.get("error", "")))

    def throttled(self, request: Request, nxt: str, row: dict) -> Response:
        wait = int(row["retry_after_s"])
        text = THROTTLED.get(row["reason"], THROTTLED["address"]).format(wait=_wait_text(wait))
        return self.login_page(request, nxt, text, status_code=429, headers={"retry-after": str(wait)})

    def sign_in(self, username: str, password: str, addr: IP, device: bytes | None) -> tuple[dict, str | None, str | None]:
        """(nexus.sign_in's row, session token, new browser token) for one attempt; runs in the threadpool."""
        params = self.sql("SELECT * FROM nexus.login_params(%s, %s, %s)", (username, addr, device))[0]
        if params["status"] == "throttled":
            return params, None, None
        with self.scrypt_slots:
            key = derive_key(password, params["salt"], params["n"], params["r"], params["p"], params["dklen"])
        token, new_device = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        row = self.sql("SELECT * FROM nexus.sign_in(%s, %s, %s, %s, %s, %s, %s, %s)",
                  (username, key, self._hash(token), secrets.token_urlsafe(32), self.session_ttl_s, addr, device,
                   self._hash(new_device)))[0]
        return row, token, new_device

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not same_token(form.get("csrf_token"), request.cookies.get(LOGIN_COOKIE)):
            return self.refuse_csrf()
        username, password = form.get("username"), form.get("password")
        username = username.replace("\x00", "") if isinstance(username, str) else ""
        password = password if isinstance(password, str) else ""
        nxt = safe_next(form.get("next"))
        addr = client_ip(request.client.host) if request.client else None
        device_token = request.cookies.get(DEVICE_COOKIE)
        device = self._hash(device_token) if device_token and TOKEN_RE.fullmatch(device_token) else None
        row, token, new_device = await run_in_threadpool(self.sign_in, username, password,
                                                          addr or ipaddress.IPv4Address(0), device)
        if row["status"] == "throttled":
            log.info("hitl page: sign-in held back (%s, %s s) from %s", row["reason"], row["retry_after_s"], addr)
            return self.throttled(request, nxt, row)
        if row["status"] != "signed_in":
            return RedirectResponse(f"/login?error=1&next={quote(nxt)}", status_code=303)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, token, max_age=self.session_ttl_s, httponly=True, samesite="lax", secure=self.web.secure_cookies)
        resp.set_cookie(DEVICE_COOKIE, new_device, max_age=DEVICE_TTL_S, path="/login", httponly=True,
                        samesite="strict", secure=self.web.secure_cookies)
        resp.delete_cookie(LOGIN_COOKIE)
        return resp

    async def logout(self, request: Request) -> Response:
        sess = await run_in_threadpool(self.session, request)
        if not sess:
            return self.to_login(request)
        if await self.checked_form(request, sess) is None:
            return self.refuse_csrf()
        await run_in_threadpool(self.sql, "SELECT nexus.session_delete(%s)", (self._hash(request.cookies[COOKIE]),))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # -- approvals and questions -------------------------------------------------------------------
    def home(self, request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303) if self.session(request) else self.to_login(request)

    def approvals(self, request: Request) -> Response:
        sess = self.page_session(request)
        if not sess:
            return self.to_login(request)
        return self.page(request, "approvals.html", sess, items=self.hitl.pending("approval"))

    def questions(self, request: Request) -> Response:
        sess = self.page_session(request)
        if not sess:
            return self.to_login(request)
        return self.page(request, "questions.html", sess, items=self.hitl.pending("question"))

    async def decide(self, request: Request) -> Response:
        sess = await run_in_threadpool(self.session, request)
        if not sess:
            return self.to_login(request)
        form = await self.checked_form(request, sess)
        if form is None:
            return self.refuse_csrf()
        kind = request.url.path.split("/")[1]
        rid = request.path_params["rid"]
        try:
            if kind == "approvals":
                if form.get("decision") not in ("approve", "reject"):
                    return PlainTextResponse("decision must be approve or reject: use the page's Approve or Reject "
                                             "button", status_code=400)
                out = await run_in_threadpool(self.hitl.decide, rid, sess["username"], approved=form["decision"] == "approve",
                                              comment=form.get("comment") or None)
            else:
                out = await run_in_threadpool(self.hitl.decide, rid, sess["username"], response=form.get("response") or "")
        except psycopg.errors.InvalidParameterValue as e:
            await run_in_threadpool(self.notify, request, e.diag.message_primary or str(e))
            return RedirectResponse(f"/{kind}", status_code=303)
        words = {"decided": "decided", "recorded": f"vote recorded ({out.get('approvals')} of {out.get('quorum')} "
                 "approvals so far)", "already_voted": "you already voted on this one",
                 "already_decided": "already decided", "not_found": "no such request"}
        await run_in_threadpool(self.notify, request, f"{rid}: " + words[out["status"]])
        return RedirectResponse(f"/{kind}", status_code=303)

    # -- dashboard and metrics --------------------------------------------------------------------------
    def dash(self, request: Request) -> Response:
        sess = self.page_session(request)
        if not sess:
            return self.to_login(request)
        return self.page(request, "dashboard.html", sess, d=self.dashboard.snapshot() if self.dashboard else {})

    async def replay(self, request: Request) -> Response:
        sess = await run_in_threadpool(self.session, request)
        if not sess:
            return self.to_login(request)
        if await self.checked_form(request, sess) is None:
            return self.refuse_csrf()
        dlq_id = int(request.path_params["dlq_id"])
        try:
            new_id = await run_in_threadpool(self.dashboard.replay, dlq_id)
        except psycopg.Error as e:  # refused (not the bus's, sender may no longer send, invalid now): say why
            why = e.diag.message_primary or str(e)
            log.info("dead letter %s not replayed for %s: %s", dlq_id, sess["username"], why)
            await run_in_threadpool(self.notify, request, f"dead letter {dlq_id} not replayed: {why}"
                                    + (f" ({e.diag.message_hint})" if e.diag.message_hint else ""))
            return RedirectResponse("/dashboard", status_code=303)
        log.info("dead letter %s replayed by %s as msg %s", dlq_id, sess["username"], new_id)
        await run_in_threadpool(self.notify, request, f"dead letter replayed as msg {new_id}")
        return RedirectResponse("/dashboard", status_code=303)

    def metrics(self, request: Request) -> Response:
        token = self.metrics_token
        raw = request.headers.get("authorization")
        if raw is not None:
            given = raw.encode("latin-1")  # the header's bytes as sent (Starlette decodes them as latin-1)
            if not re.fullmatch(rb"[\x20-\x7e]{1,1024}", given):
                return PlainTextResponse("Authorization header malformed (only printable ASCII is allowed): send "
                                         "Authorization: Bearer $NEXUS_METRICS_TOKEN, or sign in\n", status_code=403)
            if token and hmac.compare_digest(given, f"Bearer {token}".encode()):
                return self.serve_metrics()
        if not self.session(request):
            return PlainTextResponse("sign in, or send Authorization: Bearer $NEXUS_METRICS_TOKEN\n", status_code=401)
        return self.serve_metrics()

    def serve_metrics(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.dashboard.prometheus() if self.dashboard else b"", media_type=CONTENT_TYPE_LATEST)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home), Route("/login", self.login_form, methods=["GET"]), Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/approvals", self.approvals), Route("/questions", self.questions),
            Route("/approvals/{rid:str}", self.decide, methods=["POST"]), Route("/questions/{rid:str}", self.decide, methods=["POST"]),
            Route("/dashboard", self.dash), Route("/dlq/{dlq_id:int}/replay", self.replay, methods=["POST"]),
            Route("/metrics", self.metrics), Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
            *(ConsoleRoutes(self).routes() if self.dashboard else []),
        ]


def create_app(hitl: Hitl, pool: ConnectionPool, dashboard=None, *, web: WebSettings | None = None,
               session_ttl_s: int = 8 * 3600, metrics_token: str | None = None) -> Starlette:
    """The page as an ASGI app: the routes of Page behind the security headers, the host check and the
    client address (outermost first: every answer, a refused host too, gets the headers; the host is
    checked before anything runs; the client's address is settled before any route reads it)."""
    page = Page(hitl, pool, dashboard, web=web, session_ttl_s=session_ttl_s, metrics_token=metrics_token)
    return Starlette(routes=page.routes(), middleware=[
        Middleware(SecurityHeaders), Middleware(AllowedHosts, hosts=page.web.hosts),
        Middleware(ClientAddress, proxies=page.web.trusted_proxies)])
