"""A real local HTTP server speaking the OpenAI, Anthropic and Gemini wire formats, scripted per model.

`server.script["m1"] = ["429", "ok"]` makes the next two calls for remote model m1 answer 429 then OK
(the last step repeats). Steps: ok, 429, 500, 400, slow (sleeps past any short timeout), malformed, notjson.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without this, delayed ACKs add 40 ms

    def log_message(self, *_a) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        srv: ProviderServer = self.server.owner  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path.endswith("/chat/completions"):
            fmt, model = "openai", body.get("model")
        elif self.path.endswith("/v1/messages"):
            fmt, model = "anthropic", body.get("model")
        elif m := re.search(r"/v1beta/models/([^/:]+):generateContent$", self.path):
            fmt, model = "gemini", m.group(1)
        else:
            return self._send(404, {"error": "no such path"})
        step = srv.next_step(model)
        srv.calls.append({"format": fmt, "model": model, "step": step, "headers": dict(self.headers), "body": body})
        if step == "slow":
            time.sleep(srv.slow_s)
            step = "ok"
        if step in ("429", "500", "400"):
            return self._send(int(step), {"error": {"message": f"scripted {step}"}}, {"retry-after": "0"})
        if step == "notjson":
            return self._raw(200, b"<html>oops</html>", "text/html")
        if step == "malformed":
            return self._send(200, {"unexpected": True})
        text = f"{fmt}:{model} says hi"
        if fmt == "openai":
            doc = {"choices": [{"message": {"role": "assistant", "content": text}}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
        elif fmt == "anthropic":
            doc = {"content": [{"type": "text", "text": text}], "usage": {"input_tokens": 11, "output_tokens": 7}}
        else:
            doc = {"candidates": [{"content": {"parts": [{"text": text}]}}],
                   "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7}}
        self._send(200, doc)

    def _send(self, code: int, doc: dict, headers: dict | None = None) -> None:
        self._raw(code, json.dumps(doc).encode(), "application/json", headers)

    def _raw(self, code: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class ProviderServer:
    def __init__(self, slow_s: float = 1.5):
        self.script: dict[str, list[str]] = {}
        self.calls: list[dict] = []
        self.slow_s = slow_s
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def next_step(self, model: str) -> str:
        with self._lock:
            steps = self.script.get(model) or ["ok"]
            return steps.pop(0) if len(steps) > 1 else steps[0]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
