"""Approvals where people are: each new approval or question is POSTed as JSON to NEXUS_HITL_WEBHOOK (a chat
tool's incoming webhook, or anything that takes JSON), with a one-line summary and a link to it on the page;
`text` holds both, which is what Slack- and Mattermost-style incoming webhooks show. Posts happen in the hitl
worker's pass, never in the claim itself; one the receiver did not answer with 2xx is tried again at the next
pass (up to MAX_PENDING waiting, then the oldest is dropped with a warning). A request is announced on its
first delivery; a redelivery after a crash is not announced again."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import httpx

log = logging.getLogger(__name__)

MAX_PENDING = 1000


def summary(kind: str, body: dict) -> str:
    """One line saying who asks what."""
    agent = body.get("agent_id") or "an agent"
    if kind == "approval":
        reason = f": {body['reason']}" if body.get("reason") else ""
        return f"{agent} asks to approve a change to {body.get('file_path', '?')}{reason}"[:300]
    options = body.get("options")
    opts = f" (options: {', '.join(map(str, options))})" if isinstance(options, list) and options else ""
    return f"{agent} asks: {body.get('question', '?')}{opts}"[:300]


class HitlWebhook:
    """Announces new approvals and questions to URL; PAGE_URL() is the page's address as really served."""

    def __init__(self, url: str, page_url: Callable[[], str], token: str | None = None, timeout_s: float = 5.0):
        self.url, self.page_url, self.token, self.timeout_s = url, page_url, token, timeout_s
        self.pending: deque[dict] = deque()

    def add(self, kind: str, body: dict) -> None:
        """Queue the announcement of a new request (sent by the next flush)."""
        rid = str(body.get("id"))
        link = f"{self.page_url()}/{kind}s#{kind}-{rid}"
        text = summary(kind, body)
        if len(self.pending) >= MAX_PENDING:
            dropped = self.pending.popleft()
            log.warning("hitl webhook: %d announcements waiting; dropped the oldest (%s %s). Check NEXUS_HITL_WEBHOOK",
                        MAX_PENDING, dropped["kind"], dropped["request_id"])
        self.pending.append({"source": "orchestrator", "event": f"{kind}_requested", "kind": kind, "request_id": rid,
                             "agent_id": body.get("agent_id"), "summary": text, "url": link,
                             "text": f"{text}\n{link}"})

    def flush(self) -> int:
        """POST what waits, oldest first; stops at the first failure (tried again at the next pass). Returns the
        number sent."""
        sent = 0
        while self.pending:
            payload = self.pending[0]
            if not self.post(payload):
                break
            self.pending.popleft()
            sent += 1
            log.info("hitl webhook: announced %s %s", payload["kind"], payload["request_id"])
        return sent

    def post(self, payload: dict) -> bool:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.post(self.url, json=payload, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as e:
            log.warning("hitl webhook %s unreachable (%s); trying again at the next pass. Check NEXUS_HITL_WEBHOOK.",
                        self.url, type(e).__name__)
            return False
        if r.status_code // 100 != 2:
            log.warning("hitl webhook %s answered HTTP %s; trying again at the next pass. Check the receiver and "
                        "NEXUS_HITL_WEBHOOK_TOKEN.", self.url, r.status_code)
            return False
        return True
