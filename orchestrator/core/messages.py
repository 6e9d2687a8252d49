"""Message rules, mirrored from SQL (bus.message_rules()) so clients refuse bad messages before sending.

The rules live in one place, the bus.message_fields table; this module only reads and applies them.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class ValidationError(ValueError):
    """A message that the bus would refuse; the text names the queue, the field and the fix."""


def ulid() -> str:
    """A new ULID: 48-bit ms timestamp + 80 random bits, Crockford base32 (same as ops.ulid())."""
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _type_ok(v, want: str) -> bool:
    if want == "any":
        return True
    if want == "string":
        return isinstance(v, str)
    if want == "boolean":
        return isinstance(v, bool)
    if want == "integer":
        return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())
    if want == "number":
        return isinstance(v, int | float) and not isinstance(v, bool)
    if want == "array":
        return isinstance(v, list)
    if want == "object":
        return isinstance(v, dict)
    return False


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def json_depth(v) -> int:
    """How deeply objects and arrays nest in V (0 for a scalar), as bus.json_depth counts; no recursion."""
    depth, stack = 0, [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict | list):
            depth = max(depth, d)
            stack.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))
    return depth


class Rules:
    """The validation rules of every queue, as loaded from bus.message_rules()."""

    def __init__(self, doc: dict):
        self.queues: dict[str, str] = doc.get("queues") or {}
        self.kinds: dict[str, dict] = doc.get("kinds") or {}
        self.instance_of: dict[str, str | None] = doc.get("queue_instances") or {}
        self.identity: dict = doc.get("identity") or {}  # the caller on the bus (bus._identity): service, instance
        self.id_re = re.compile(doc.get("id_pattern") or r"^[^\x01-\x1f\x7f]{1,128}$")
        self.ts_re = re.compile(doc.get("timestamp_pattern") or r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")
        self.max_depth: int = doc.get("max_json_depth") or 64

    def _stamp_identity(self, queue: str, kind: dict, m: dict) -> None:
        """As bus._stamp_identity: an instance's instance_id and a service's name are stamped; another is refused."""
        fields = {f["field"] for f in kind["fields"]}
        for field, mine in (("instance_id", self.identity.get("instance_id")), ("service", self.identity.get("service"))):
            if mine is None or field not in fields:
                continue
            if m.get(field) is not None and m[field] != mine:
                raise PermissionError(f'{queue}: {self.identity.get("sender")} is {field.replace("_id", "")} "{mine}" and '
                                      f'may not send as {field.replace("_id", "")} "{str(m[field])[:60]}"')
            m[field] = mine

    def _check_size_and_depth(self, queue: str, kind: dict, m: dict) -> None:
        try:
            text = json.dumps(m, separators=(", ", ": "), ensure_ascii=False, allow_nan=False)
            text.encode()
        except RecursionError:
            raise ValidationError(f"{queue}: message is nested too deeply to encode; flatten it, or send deeply "
                                  "nested data as a JSON string") from None
        except UnicodeEncodeError:
            raise ValidationError(f"{queue}: message contains a lone UTF-16 surrogate (e.g. \\ud800), which is not "
                                  "valid Unicode; remove it or encode the data (e.g. base64)") from None
        except ValueError as e:
            raise ValidationError(f"{queue}: message is not valid JSON ({e}); send finite numbers only") from None
        except TypeError as e:
            raise ValidationError(f"{queue}: message is not JSON-serialisable ({e})") from None
        if "\x00" in text or "\\u0000" in text:
            raise ValidationError(f"{queue}: message contains a NUL character (\\u0000), which PostgreSQL cannot "
                                  "store; remove it or encode the data (e.g. base64)")
        size = len(text.encode())
        if size > kind["max_bytes"]:
            raise ValidationError(f"{queue}: message is {size} bytes, over the limit of {kind['max_bytes']} bytes; "
                                  "store large payloads elsewhere and send a reference")
        depth = json_depth(m)
        if self.queues.get(queue) != "dead_letters" and depth > self.max_depth:
            raise ValidationError(f"{queue}: message is nested {depth} levels deep, over the limit of {self.max_depth}; "
                                  "flatten the data, or send deeply nested data as a JSON string inside the message")

    def _stamp_envelope(self, queue: str, m: dict) -> None:
        """id (any 1-128 printable characters; a ULID when absent), created_at and timestamp (ISO-8601,
        either given stamps the other), source: as bus.validate_message does."""
        if m.get("id") is None:
            m["id"] = ulid()
        elif not isinstance(m["id"], str) or not self.id_re.match(m["id"]):
            raise ValidationError(f'{queue}: field "id" must be a string of 1 to 128 printable characters, got '
                                  f'{json.dumps(m["id"])[:60]}')
        for tf in ("created_at", "timestamp"):
            v = m.get(tf)
            if v is not None and not (isinstance(v, str) and self.is_timestamp(v)):
                raise ValidationError(f'{queue}: field "{tf}" must be an ISO-8601 timestamp string (e.g. '
                                      f'2026-01-31T12:00:00Z), got {json.dumps(v)[:60]}')
        m["created_at"] = m.get("created_at") or m.get("timestamp") or now_iso()
        m["timestamp"] = m.get("timestamp") or m["created_at"]
        if m.get("source") is not None and not isinstance(m["source"], str):
            raise ValidationError(f'{queue}: field "source" must be a string, got {_json_type(m["source"])}')

    def is_timestamp(self, v: str) -> bool:
        """An ISO-8601 time (the pattern SQL hands out) that names a real time."""
        if not self.ts_re.match(v):
            return False
        try:
            datetime.fromisoformat(v.replace(" ", "T", 1))
            return True
        except ValueError:
            return False

    def kind_of(self, queue: str) -> str:
        if queue not in self.queues:
            raise ValidationError(f'unknown queue "{queue[:60]}"; use one of: {", ".join(sorted(self.queues))}')
        return self.queues[queue]

    def validate(self, queue: str, message: object) -> dict:
        """Return MESSAGE with its envelope stamped, or raise ValidationError exactly as SQL would
        (bus.validate_message: the same rules, patterns and limits, read from bus.message_rules())."""
        kind = self.kinds[self.kind_of(queue)]
        if not isinstance(message, dict):
            raise ValidationError(f"{queue}: a message must be a JSON object, got {_json_type(message)}")
        m = dict(message)
        self._check_size_and_depth(queue, kind, m)
        self._stamp_envelope(queue, m)
        self._stamp_identity(queue, kind, m)
        if m.get("type") is None:
            for f in kind["fields"]:
                if f["field"] == "type" and f["msg_type"] == "*" and f["allowed"]:
                    m["type"] = f["allowed"][0]
        mtype = m.get("type")
        if self.kind_of(queue) == "llm_requests" and "messages" not in m and isinstance(m.get("task"), str):
            m["messages"] = [{"role": "user", "content": m["task"]}]  # seed 001's shorthand, as SQL does
            m.setdefault("task_type", "general")
        for f in kind["fields"]:
            if f["msg_type"] not in ("*", mtype):
                continue
            name = f["field"]
            if f.get("default") is not None and m.get(name) is None:
                m[name] = f["default"]
            if name not in m or (m[name] is None and not f["nullable"]):
                if f["required"]:
                    raise ValidationError(f'{queue}: required field "{name}" is missing; add "{name}" (a JSON {f["json_type"]})')
                if name in m:
                    raise ValidationError(f'{queue}: field "{name}" must not be null')
                continue
            v = m[name]
            if v is None:
                continue
            if not _type_ok(v, f["json_type"]):
                raise ValidationError(f'{queue}: field "{name}" must be a JSON {f["json_type"]}, got {_json_type(v)}')
            if f["nonempty"] and v in ("", [], {}):
                raise ValidationError(f'{queue}: field "{name}" must not be empty')
            if f["allowed"] is not None and v not in f["allowed"]:
                raise ValidationError(f'{queue}: field "{name}" is {json.dumps(v)[:60]}, which is not one of {json.dumps(f["allowed"])}')
        rk = kind.get("result_kind")
        inst = self.identity.get("instance_id")
        if ("reply_to" in m and not self.identity.get("trusted") and self.identity.get("service")
                and self.instance_of.get(m["reply_to"], "?") != inst):
            raise PermissionError(f'{queue}: reply_to "{str(m["reply_to"])[:60]}" is not one of the reply queues of '
                                  f'{self.identity.get("sender")} (instance "{inst}"); name one of your own')
        if rk and "reply_to" in m and self.queues.get(m["reply_to"]) != rk:
            raise ValidationError(f'{queue}: reply_to "{str(m["reply_to"])[:60]}" is not a {rk} queue')
        return m
