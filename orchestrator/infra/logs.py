"""Logging setup, done once at CLI entry; modules only call logging.getLogger(__name__).

One handler on the root logger (text, or one JSON object a line with ORCHESTRATOR_LOG_JSON, for the web
server's loggers too, which are not given handlers of their own), and repeated connection errors collapsed:
while the database is away every pool, listener and worker says so again and again (a 35 s outage logged
~430 warnings), so the first is shown, then one line a window with how many more there were."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# what a lost or refused database connection looks like, whoever logs it (not an LLM provider's refusal)
CONNECTION_ERROR = re.compile(
    r"connection to server (at|on)|error connecting in|reconnection attempt in pool|database unavailable|"
    r"couldn't get a connection from|notification connection lost|database connection was lost|"
    r"connection lost; probing the pool|the database system is (shutting down|starting up|in recovery)|"
    r"terminating connection|server closed the connection|connection is (bad|closed)|"
    r"\((OperationalError|PoolTimeout|AdminShutdown|InterfaceError|ConnectionTimeout)\)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in getattr(record, "fields", {}).items():
            out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class CollapsingHandler(logging.StreamHandler):
    """A stream handler that shows the first connection warning, then at most one line per WINDOW_S seconds
    saying how many more there were (and the last one's words); the count so far is also written out as soon as
    any other line comes (e.g. the reconnect), so an outage always ends with its total."""

    def __init__(self, stream=None, window_s: float = 30.0):
        super().__init__(stream)
        self.window_s = window_s
        self.first: float | None = None    # when the current window started (None: no connection trouble seen)
        self.more = 0                      # connection errors held back in this window
        self.last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # INFO and WARNING lines about the connection; an ERROR (e.g. the daemon's explanation at start) always shows
        if logging.INFO <= record.levelno <= logging.WARNING and CONNECTION_ERROR.search(record.getMessage()):
            now = record.created
            if self.first is not None and now - self.first < self.window_s:
                self.more, self.last = self.more + 1, record
                return
            if self.more:  # the window is over: this one and those held back as one line
                self.more, self.last = self.more + 1, record
                self.write_summary(now)
                return
            self.first, self.more, self.last = now, 0, None
            super().emit(record)
            return
        if self.more:
            self.write_summary(record.created)
        if self.first is not None and record.created - self.first >= self.window_s:
            self.first = None
        super().emit(record)

    def write_summary(self, now: float) -> None:
        last = self.last
        text = (f"{self.more} more database connection error(s) in the last {max(1.0, now - self.first):.0f} s; the last: "
                f"{last.name}: {last.getMessage().strip().splitlines()[0][:300]}")
        summary = logging.LogRecord(last.name, logging.WARNING, last.pathname, last.lineno, text, None, None)
        summary.created, summary.msecs = last.created, last.msecs
        summary.fields = {"event": "connection_errors_collapsed", "repeated": self.more}
        self.more, self.last, self.first = 0, None, now
        super().emit(summary)


def configure(level: str = "INFO", as_json: bool = False) -> None:
    handler = CollapsingHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # the web server's lines go through this handler
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
        lg.setLevel(max(logging.WARNING, root.level) if name != "uvicorn.error" else root.level)


def logging_json() -> bool:
    """True when the root handler writes JSON (ORCHESTRATOR_LOG_JSON / --log-json)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
