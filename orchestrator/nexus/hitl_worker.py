"""The `hitl` worker: holds approval/question requests for people and serves the web page.

A periodic pass claims new requests (long lease), keeps leases alive, denies expired approvals and
publishes decided items; the page (uvicorn in a thread of the daemon) lists pending items from
nexus and records decisions. Env: NEXUS_WEB_HOST (127.0.0.1), NEXUS_WEB_PORT (8780),
NEXUS_HITL_LEASE_S (300), NEXUS_HITL_TIMEOUT_S (86400, default approval timeout), NEXUS_HITL_TICK_S (1),
NEXUS_WEB_REQUIRED (0: a busy port is logged and the worker runs on without the page; 1: exit),
NEXUS_WEB_HOSTS (host names the page answers to), NEXUS_TRUSTED_PROXIES (whose X-Forwarded-For counts),
NEXUS_WEB_SECURE_COOKIES (orchestrator.nexus.web.app.web_settings), NEXUS_HITL_WEBHOOK and
NEXUS_HITL_WEBHOOK_TOKEN (new requests announced: orchestrator.nexus.hitl_webhook).
"""

from __future__ import annotations

import logging
import socket
import threading

from orchestrator.core.bus import Bus
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings
from orchestrator.infra.db import make_pool, role_conninfo
from orchestrator.nexus.hitl import Hitl
from orchestrator.nexus.hitl_webhook import HitlWebhook
from orchestrator.nexus.settings import NexusSettings, web_settings

log = logging.getLogger(__name__)


class WebServer:
    """uvicorn serving APP on HOST:PORT in a background thread (port 0 picks a free one)."""

    def __init__(self, app, host: str, port: int):
        self.app, self.host, self.port = app, host, port
        self.sock: socket.socket | None = None
        self.server = None
        self.thread: threading.Thread | None = None
        self.problem: str | None = None   # why nothing is served (a taken port), with the fix

    @property
    def serving(self) -> bool:
        return self.server is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, required: bool = True) -> WebServer:
        """Listen and serve. A busy port raises SystemExit, or (REQUIRED false) logs an error and serves nothing."""
        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            msg = (f"hitl: cannot listen on {self.host}:{self.port} ({e.strerror}; another program, perhaps another "
                   "checkout's daemon, has it); set NEXUS_WEB_PORT to a free port (0 picks one and the banner prints "
                   "it) or stop what uses it")
            if required:
                raise SystemExit(msg) from None
            self.problem = msg
            log.error("%s; the page is off, approvals still time out and decisions already made are published "
                      "(NEXUS_WEB_REQUIRED=true stops the daemon instead)", msg)
            return self
        self.sock, self.port = sock, sock.getsockname()[1]
        # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1 (its default); the page
        # believes it only from NEXUS_TRUSTED_PROXIES (orchestrator.nexus.web.app.ClientAddress)
        # log_config None: uvicorn's loggers keep no handlers of their own and go through the root handler
        # (orchestrator.infra.logs: JSON with ORCHESTRATOR_LOG_JSON, like every other line)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                                    proxy_headers=False, server_header=False, log_config=None))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="hitl-web",
                                       daemon=True)
        self.thread.start()
        log.info("hitl page on %s", self.url)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(timeout=5)
        if self.sock is not None:
            self.sock.close()


def build(s: Settings, *, host: str | None = None, port: int | None = None, ns: NexusSettings | None = None):
    """The parts of the hitl worker: (Hitl, WebServer, Worker)."""
    from orchestrator.nexus.dashboard import Dashboard
    from orchestrator.nexus.web.app import create_app

    ns = ns or NexusSettings.from_env()  # before anything connects: a bad setting stops here, with the fix
    web_cfg = web_settings(host, env=None) if host and host != ns.web_host else ns.web
    host = host or ns.web_host
    bus = Bus.for_role(s, "svc_nexus", source="nexus:hitl", pool_size=3)
    pool = make_pool(role_conninfo(s, "nexus", "svc_nexus"), max_size=4, name="nexus:hitl")
    hitl = Hitl(bus, pool, lease_s=ns.hitl_lease_s, default_timeout_s=ns.hitl_timeout_s, batch=s.batch_size)
    dash = Dashboard(bus.pool, pool)
    app = create_app(hitl, pool, dash, web=web_cfg, metrics_token=ns.metrics_token)
    web = WebServer(app, host, port if port is not None else ns.web_port)
    tick = hitl.tick
    if ns.hitl_webhook:
        hook = HitlWebhook(ns.hitl_webhook, lambda: web.url, token=ns.hitl_webhook_token)
        hitl.on_new = hook.add

        def tick() -> None:
            hitl.tick()
            hook.flush()

    def stop() -> None:
        web.stop()
        pool.close()
        bus.close()

    worker = Worker(name="hitl", bus=bus, every_s=ns.hitl_tick_s, tick=tick, on_stop=stop)
    return hitl, web, worker


def make(s: Settings) -> Worker:
    ns = NexusSettings.from_env()
    _hitl, web, worker = build(s, ns=ns)
    web.start(required=ns.web_required)
    worker.notice = banner_line(web)
    return worker


def banner_line(web: WebServer) -> str:
    """The daemon's banner line for the page: the address actually served, or why there is none and the fix."""
    if web.serving:
        return (f"web page (approvals, questions, dashboard; /metrics for Prometheus): {web.url}/   "
                "sign-in user: orchestrator nexus user add NAME")
    return f"web page: OFF ({web.problem})"
