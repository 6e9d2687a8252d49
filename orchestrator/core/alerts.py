"""Alert pusher: every ORCHESTRATOR_ALERT_CHECK_S seconds, evaluates bus.alerts() (as svc_nexus, through
bus.dashboard_alerts) and pushes what changed: new alerts are logged at WARNING with their fix, cleared
ones at INFO, and both are POSTed as JSON to ORCHESTRATOR_ALERT_WEBHOOK when it is set (optional bearer
token ORCHESTRATOR_ALERT_WEBHOOK_TOKEN). A webhook that fails is retried at the next check: nothing is
marked as sent until the receiver answered 2xx.
"""

from __future__ import annotations

import logging

import httpx

from orchestrator.core.bus import Bus
from orchestrator.core.messages import now_iso
from orchestrator.core.supervisor import Worker
from orchestrator.infra.config import Settings

log = logging.getLogger(__name__)


class AlertPusher:
    def __init__(self, bus: Bus, webhook: str | None = None, token: str | None = None, timeout_s: float = 5.0):
        self.bus, self.webhook, self.token, self.timeout_s = bus, webhook, token, timeout_s
        self.sent: dict[tuple[str, str], dict] = {}  # (severity, subject) -> alert, as last pushed

    def current(self) -> dict[tuple[str, str], dict]:
        rows = self.bus.run(lambda c: c.execute("SELECT * FROM bus.dashboard_alerts()").fetchall())
        return {(r["severity"], r["subject"]): dict(r) for r in rows}

    def check(self) -> dict:
        """One round: compare with what was last pushed, push the difference. Returns the payload (or {})."""
        now = self.current()
        new = [a for k, a in now.items() if k not in self.sent]
        cleared = [{"severity": k[0], "subject": k[1]} for k in self.sent if k not in now]
        if not new and not cleared:
            return {}
        payload = {"source": "orchestrator", "at": now_iso(), "new": new, "cleared": cleared, "current": len(now)}
        if self.webhook and not self._post(payload):
            return {}  # retried at the next check; self.sent unchanged
        for a in new:
            log.warning("ALERT [%s] %s: %s -- fix: %s", a["severity"].upper(), a["subject"], a["message"], a["fix"])
        for c in cleared:
            log.info("alert cleared: [%s] %s", c["severity"].upper(), c["subject"])
        self.sent = now
        return payload

    def _post(self, payload: dict) -> bool:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.post(self.webhook, json=payload, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as e:
            log.warning("alert webhook %s unreachable (%s); retrying at the next check. Check "
                        "ORCHESTRATOR_ALERT_WEBHOOK.", self.webhook, type(e).__name__)
            return False
        if r.status_code // 100 != 2:
            log.warning("alert webhook %s answered HTTP %s; retrying at the next check. Check the receiver and "
                        "ORCHESTRATOR_ALERT_WEBHOOK_TOKEN.", self.webhook, r.status_code)
            return False
        return True


def make(s: Settings) -> Worker:
    bus = Bus.for_role(s, "svc_nexus", source="nexus:alerts", pool_size=1)
    pusher = AlertPusher(bus, s.alert_webhook, s.alert_webhook_token)
    return Worker(name="alerts", bus=bus, every_s=s.alert_check_s,
                  tick=pusher.check, on_stop=bus.close)
