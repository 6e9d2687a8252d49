"""Nexus's settings, read once from the environment (NEXUS_*), checked, with the fix when wrong: the
router worker, the HITL worker and its web page. Provider API keys are read by the name the nexus
database stores (api_key)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from orchestrator.infra.settings import Env, SettingError

NET = ipaddress.IPv4Network | ipaddress.IPv6Network


DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class WebSettings:
    """What the page trusts: the host names it answers to, the proxies whose X-Forwarded-For it believes."""

    hosts: frozenset[str] = frozenset(DEFAULT_HOSTS)
    trusted_proxies: tuple[NET, ...] = field(default=())
    secure_cookies: bool = False


def web_settings(bind_host: str, env=None) -> WebSettings:
    """Read NEXUS_WEB_HOSTS, NEXUS_TRUSTED_PROXIES and NEXUS_WEB_SECURE_COOKIES once; SystemExit with the fix
    when one is malformed."""
    env = Env(env).env
    raw_hosts = [h for h in re.split(r"[\s,]+", env.get("NEXUS_WEB_HOSTS", "").strip()) if h]
    hosts = set()
    for h in raw_hosts:
        name = host_name(h)
        if name is None:
            raise SystemExit(f"NEXUS_WEB_HOSTS: {h!r} is not a host name or address; list the names the page is "
                             "opened by, e.g. NEXUS_WEB_HOSTS=nexus.example.com,localhost")
        hosts.add(name)
    if not hosts:
        hosts = {*DEFAULT_HOSTS, (host_name(bind_host) or "127.0.0.1")}
    proxies = []
    for p in re.split(r"[\s,]+", env.get("NEXUS_TRUSTED_PROXIES", "").strip()):
        if not p:
            continue
        try:
            proxies.append(ipaddress.ip_network(p, strict=False))
        except ValueError:
            raise SystemExit(f"NEXUS_TRUSTED_PROXIES: {p!r} is not an address or network; list your reverse "
                             "proxies' addresses, e.g. NEXUS_TRUSTED_PROXIES=10.0.0.5,192.168.10.0/24") from None
    return WebSettings(hosts=frozenset(hosts), trusted_proxies=tuple(proxies),
                       secure_cookies=env.get("NEXUS_WEB_SECURE_COOKIES", "") == "1")


def host_name(value: str) -> str | None:
    """The host name of a Host header or setting (lower case, no port, no brackets), or None when malformed."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        name, rest = (v[1:end], v[end + 1:]) if end > 0 else ("", "")
        if rest and not re.fullmatch(r":[0-9]{1,5}", rest):
            return None
        try:
            return str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    if v.count(":") > 1:  # a bare IPv6 address (a setting)
        try:
            return str(ipaddress.IPv6Address(v))
        except ValueError:
            return None
    name, _, port = v.partition(":")
    name = name.rstrip(".")
    if (port and not re.fullmatch(r"[0-9]{1,5}", port)) or not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", name):
        return None
    return name


@dataclass(frozen=True)
class NexusSettings:
    concurrency: int            # NEXUS_CONCURRENCY: parallel LLM requests per daemon
    lease_margin_s: float       # NEXUS_LEASE_MARGIN_S: how long a held request's lease outlives a provider attempt
    web_host: str               # NEXUS_WEB_HOST
    web_port: int               # NEXUS_WEB_PORT (0 picks a free port)
    web_required: bool          # NEXUS_WEB_REQUIRED: a taken port stops the daemon (else the page is off)
    hitl_lease_s: float         # NEXUS_HITL_LEASE_S: lease of a held approval/question delivery
    hitl_timeout_s: float       # NEXUS_HITL_TIMEOUT_S: default approval timeout (automatic deny)
    hitl_tick_s: float          # NEXUS_HITL_TICK_S: the HITL worker's pass
    metrics_token: str | None   # NEXUS_METRICS_TOKEN: bearer token for /metrics without a session
    hitl_webhook: str | None = None        # NEXUS_HITL_WEBHOOK: new approvals and questions are POSTed there
    hitl_webhook_token: str | None = None  # NEXUS_HITL_WEBHOOK_TOKEN: its bearer token
    web: WebSettings = field(default_factory=WebSettings)

    @classmethod
    def from_env(cls, env=None) -> NexusSettings:
        e = Env(env)
        host = e.str("NEXUS_WEB_HOST", "127.0.0.1")
        return cls(
            concurrency=e.int("NEXUS_CONCURRENCY", 4, 1, 256, "the parallel LLM requests per daemon"),
            lease_margin_s=e.float("NEXUS_LEASE_MARGIN_S", 15.0, 1, 3600,
                                   "seconds", why="the time a held llm_requests message must outlive each "
                                                       "provider call's timeout"),
            web_host=host, web_port=e.port("NEXUS_WEB_PORT", 8780), web_required=e.bool("NEXUS_WEB_REQUIRED", False),
            hitl_lease_s=e.float("NEXUS_HITL_LEASE_S", 300.0, 1, 86_400, "the lease of a held approval, in s"),
            hitl_timeout_s=e.float("NEXUS_HITL_TIMEOUT_S", 86_400.0, 1, 365 * 86_400,
                                   "the default approval timeout, in s"),
            hitl_tick_s=e.float("NEXUS_HITL_TICK_S", 1.0, 0.05, 60, "the HITL worker's pass, in s"),
            metrics_token=e.str("NEXUS_METRICS_TOKEN"),
            hitl_webhook=webhook_url(e.str("NEXUS_HITL_WEBHOOK")),
            hitl_webhook_token=e.str("NEXUS_HITL_WEBHOOK_TOKEN"),
            web=web_settings(host, e.env),
        )

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"


def webhook_url(raw: str | None) -> str | None:
    """NEXUS_HITL_WEBHOOK checked: an http(s) URL, or unset."""
    if raw and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", raw):
        raise SettingError("NEXUS_HITL_WEBHOOK", raw, "give the http(s) URL new approvals and questions are POSTed to "
                           "(e.g. a chat tool's incoming webhook), or unset it")
    return raw


def api_key(env_name: str, env=None) -> str | None:
    """The API key in the environment variable ENV_NAME (the nexus database stores only the name)."""
    return Env(env).str(env_name)


__all__ = ["NET", "NexusSettings", "SettingError", "WebSettings", "api_key", "host_name", "web_settings"]
