"""A message re-sent under the same envelope id (an outbox drain that crashed after the remote send,
before its local delete) is counted once by CentralCloud's aggregation."""

from __future__ import annotations

from orchestrator.centralcloud.jobs import run_job
from orchestrator.core.messages import now_iso
from orchestrator.infra.db import connect, owner_conninfo

KEY = "dedupe.resent_copy"


def test_a_resent_copy_is_counted_once(s, clean_queues, bus_for):
    one = bus_for("svc_singularity")
    body = {"id": "01M8ZZZZZZZZZZZZZZZZ0DEDVP", "type": "pattern_detection", "instance_id": "default",
            "created_at": now_iso(),
            "patterns": [{"key": KEY, "kind": "practice", "occurrences": 3, "confidence": 0.5, "packages": []}]}
    with connect(owner_conninfo(s, "centralcloud")) as c:
        c.execute("DELETE FROM centralcloud.instance_patterns WHERE key = %s", (KEY,))
        c.execute("DELETE FROM centralcloud.received WHERE message_id = %s", (body["id"],))
    one.publish("pattern_messages", body)
    one.publish("pattern_messages", body)  # the same message again, new msg_id
    assert run_job(s, "aggregate").startswith("ok:")
    with connect(owner_conninfo(s, "centralcloud")) as c:
        occ = c.execute("SELECT occurrences FROM centralcloud.instance_patterns WHERE instance_id = 'default' "
                        "AND key = %s", (KEY,)).fetchone()["occurrences"]
        n = c.execute("SELECT count(*) AS n FROM centralcloud.received WHERE message_id = %s", (body["id"],)
                      ).fetchone()["n"]
    assert (occ, n) == (3, 1)
