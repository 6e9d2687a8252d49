"""One source per rule: the Python client's validation (orchestrator.core.messages.Rules, loaded from
bus.message_rules()) refuses exactly what SQL (bus.validate_message) refuses, with SQL's words, for
every field of every kind of message: missing, null, wrong type, empty, a value not allowed, and the
envelope (id, created_at, timestamp, source, nesting depth)."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.types.json import Jsonb

from orchestrator.core.messages import Rules, ValidationError
from orchestrator.infra.db import connect, owner_conninfo

WRONG = {"string": 7, "number": "x", "integer": 1.5, "boolean": "yes", "array": {"a": 1}, "object": [1], "any": None}
GOOD = {"string": "s", "number": 1.5, "integer": 2, "boolean": True, "array": [1], "object": {"a": 1}, "any": "x"}


@pytest.fixture(scope="module")
def sq(s):
    with connect(owner_conninfo(s, "shared_queue")) as c:
        yield c


@pytest.fixture(scope="module")
def rules(sq):
    return Rules(sq.execute("SELECT bus.message_rules() AS r").fetchone()["r"])


def valid(rules: Rules, kind: str, msg_type: str | None) -> dict:
    """A message of KIND (and MSG_TYPE) with every required field set to a good value."""
    m = {"type": msg_type} if msg_type else {}
    for f in rules.kinds[kind]["fields"]:
        if f["required"] and f["msg_type"] in ("*", msg_type or "*") and f["field"] != "type":
            m[f["field"]] = f["allowed"][0] if f["allowed"] else GOOD[f["json_type"]]
    return m


def cases(rules: Rules):
    """(queue, description, message) for one broken rule each, and the valid message itself."""
    for queue, kind in sorted(rules.queues.items()):
        if queue != kind:  # per-instance queues share their kind's rules
            continue
        types = sorted({f["msg_type"] for f in rules.kinds[kind]["fields"] if f["msg_type"] != "*"}) or [None]
        for mt in types:
            base = valid(rules, kind, mt)
            yield queue, f"{mt or kind}: valid", base
            for f in rules.kinds[kind]["fields"]:
                if f["msg_type"] not in ("*", mt or "*") or f["field"] == "type" or f["field"] == "reply_to":
                    continue
                name = f["field"]
                if f["required"]:
                    yield queue, f"{mt or kind}: {name} missing", {k: v for k, v in base.items() if k != name}
                yield queue, f"{mt or kind}: {name} null", {**base, name: None}
                if f["json_type"] != "any":
                    yield queue, f"{mt or kind}: {name} wrong type", {**base, name: WRONG[f["json_type"]]}
                if f["nonempty"]:
                    empty = {"string": "", "array": [], "object": {}}.get(f["json_type"])
                    if empty is not None:
                        yield queue, f"{mt or kind}: {name} empty", {**base, name: empty}
                if f["allowed"]:
                    yield queue, f"{mt or kind}: {name} not allowed", {**base, name: "not-" + str(f["allowed"][0])}
        base = valid(rules, kind, types[0])
        for desc, patch in [("id uuid", {"id": "550e8400-e29b-41d4-a716-446655440000"}), ("id number", {"id": 5}),
                            ("id empty", {"id": ""}), ("id 129 chars", {"id": "x" * 129}),
                            ("id control char", {"id": "a\nb"}), ("created_at iso", {"created_at": "2026-01-31T12:00:00Z"}),
                            ("created_at words", {"created_at": "yesterday"}), ("created_at 30 Feb", {"created_at": "2026-02-30"}),
                            ("created_at epoch", {"created_at": 1700000000}), ("timestamp iso", {"timestamp": "2026-01-31"}),
                            ("timestamp bad", {"timestamp": "soon"}), ("source number", {"source": 3}),
                            ("depth 64", {"deep": _nested(63)}), ("depth 65", {"deep": _nested(64)})]:
            yield queue, f"{kind}: {desc}", {**base, **patch}
    # seed 001's shorthand: "task" instead of "messages" (and no task_type)
    for desc, msg in [("task only", {"agent_id": "test", "task": "hello"}), ("task not a string", {"agent_id": "a", "task": 5}),
                      ("task and messages", {"agent_id": "a", "task": "x", "messages": []}),
                      ("task empty", {"agent_id": "a", "task": ""}),
                      ("task with task_type null", {"agent_id": "a", "task": "x", "task_type": None})]:
        yield "llm_requests", f"llm_requests shorthand: {desc}", msg


def _nested(n: int):
    v: object = 1
    for _ in range(n):
        v = [v]
    return v


def sql_verdict(sq, queue: str, msg: dict) -> str | None:
    try:
        sq.execute("SELECT bus.validate_message(%s, %s)", (queue, Jsonb(msg)))
        return None
    except psycopg.errors.Error as e:
        return e.diag.message_primary


def test_python_refuses_exactly_what_sql_refuses_with_its_words(sq, rules):
    checked, diffs = 0, []
    for queue, desc, msg in cases(rules):
        want = sql_verdict(sq, queue, msg)
        try:
            rules.validate(queue, json.loads(json.dumps(msg)))
            got = None
        except ValidationError as e:
            got = str(e)
        checked += 1
        if (want is None) != (got is None) or (want and not got.startswith(want)):
            diffs.append(f"{desc}: SQL {want!r}, Python {got!r}")
    assert checked > 150, checked
    assert not diffs, f"{len(diffs)} of {checked} cases disagree:\n" + "\n".join(diffs)


def test_both_stamp_the_same_envelope(sq, rules):
    msg = {"agent_id": "a", "task_type": "chat", "messages": ["hi"], "timestamp": "2026-01-31T12:00:00Z"}
    py = rules.validate("llm_requests", dict(msg))
    db = sq.execute("SELECT bus.validate_message('llm_requests', %s) AS m", (Jsonb({**msg, "id": py["id"]}),)).fetchone()["m"]
    assert {k: py[k] for k in ("type", "created_at", "timestamp")} == {k: db[k] for k in ("type", "created_at", "timestamp")}
