"""One function per provider wire format, over httpx. Each returns a Reply or raises ProviderError.

A candidate is a row of nexus.plan(): kind, base_url, api_key_env (the NAME of the env var),
remote_model, timeout_s. Retry/fallback decisions are the router's; here we only classify errors:
429, 5xx, timeouts and connection failures are retryable, everything else (4xx, malformed bodies,
a missing key) moves on to the next model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from orchestrator.nexus.settings import api_key


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int
    tokens_out: int


class ProviderError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content)


def _key(cand: dict) -> str | None:
    env = cand.get("api_key_env")
    if not env:
        return None
    key = api_key(env)
    if not key:
        raise ProviderError(f"provider {cand['provider']}: environment variable {env} (its API key) is not set; "
                            f"export {env}=... for the daemon", retryable=False)
    return key


def _post(client: httpx.Client, cand: dict, url: str, headers: dict, body: dict) -> dict:
    try:
        r = client.post(url, headers=headers, json=body, timeout=cand["timeout_s"])
    except httpx.TimeoutException as e:
        raise ProviderError(f"timeout after {cand['timeout_s']}s ({type(e).__name__})", retryable=True) from e
    except httpx.TransportError as e:
        raise ProviderError(f"cannot reach {url}: {type(e).__name__}: {e}", retryable=True) from e
    if r.status_code == 429 or r.status_code >= 500:
        ra = r.headers.get("retry-after")
        try:
            after = float(ra) if ra else None
        except ValueError:
            after = None
        raise ProviderError(f"HTTP {r.status_code}: {r.text[:200]}", retryable=True, retry_after=after)
    if r.status_code >= 400:
        raise ProviderError(f"HTTP {r.status_code}: {r.text[:300]}", retryable=False)
    try:
        data = r.json()
    except ValueError as e:
        raise ProviderError(f"malformed response (not JSON): {r.text[:200]!r}", retryable=False) from e
    if not isinstance(data, dict):
        raise ProviderError(f"malformed response (not an object): {r.text[:200]!r}", retryable=False)
    return data


def _malformed(what: str, data: dict) -> ProviderError:
    return ProviderError(f"malformed response ({what}): {json.dumps(data)[:200]}", retryable=False)


def openai(client: httpx.Client, cand: dict, messages: list, max_tokens: int) -> Reply:
    """OpenAI chat completions (also vLLM, Ollama, llama.cpp server): base_url ends in /v1."""
    key = _key(cand)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": cand["remote_model"], "max_tokens": max_tokens,
            "messages": [{"role": m.get("role", "user"), "content": _text(m.get("content", ""))} for m in messages]}
    data = _post(client, cand, cand["base_url"].rstrip("/") + "/chat/completions", headers, body)
    try:
        text = data["choices"][0]["message"]["content"]
        usage = data.get("usage") or {}
        return Reply(_text(text or ""), int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
    except (KeyError, IndexError, TypeError, ValueError):
        raise _malformed("no choices[0].message.content", data) from None


def anthropic(client: httpx.Client, cand: dict, messages: list, max_tokens: int) -> Reply:
    """Anthropic messages API: base_url without /v1 (https://api.anthropic.com)."""
    key = _key(cand)
    headers = {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
    system = "\n".join(_text(m.get("content", "")) for m in messages if m.get("role") == "system")
    body = {"model": cand["remote_model"], "max_tokens": max_tokens,
            "messages": [{"role": "assistant" if m.get("role") == "assistant" else "user",
                          "content": _text(m.get("content", ""))} for m in messages if m.get("role") != "system"]}
    if system:
        body["system"] = system
    data = _post(client, cand, cand["base_url"].rstrip("/") + "/v1/messages", headers, body)
    try:
        text = "".join(p["text"] for p in data["content"] if p.get("type") == "text")
        usage = data.get("usage") or {}
        return Reply(text, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _malformed("no content[].text", data) from None


def gemini(client: httpx.Client, cand: dict, messages: list, max_tokens: int) -> Reply:
    """Gemini generateContent: base_url https://generativelanguage.googleapis.com."""
    key = _key(cand)
    headers = {"x-goog-api-key": key} if key else {}
    system = "\n".join(_text(m.get("content", "")) for m in messages if m.get("role") == "system")
    body: dict = {"contents": [{"role": "model" if m.get("role") == "assistant" else "user",
                                "parts": [{"text": _text(m.get("content", ""))}]}
                               for m in messages if m.get("role") != "system"],
                  "generationConfig": {"maxOutputTokens": max_tokens}}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    url = f"{cand['base_url'].rstrip('/')}/v1beta/models/{cand['remote_model']}:generateContent"
    data = _post(client, cand, url, headers, body)
    try:
        text = "".join(p.get("text", "") for p in data["candidates"][0]["content"]["parts"])
        usage = data.get("usageMetadata") or {}
        return Reply(text, int(usage.get("promptTokenCount", 0)), int(usage.get("candidatesTokenCount", 0)))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise _malformed("no candidates[0].content.parts", data) from None


def offline(_client: httpx.Client, cand: dict, messages: list, max_tokens: int) -> Reply:
    """No network, deterministic: says it is offline and echoes the last user message (for `make run` without keys)."""
    last = next((_text(m.get("content", "")) for m in reversed(messages) if m.get("role", "user") == "user"), "")
    words = last.split()
    text = ("[offline provider: no LLM configured, see docs/nexus.md] " + " ".join(words[: max(1, max_tokens - 12)]))
    prompt = sum(len(_text(m.get("content", "")).split()) for m in messages)
    return Reply(text, prompt, len(text.split()))


CALL = {"openai": openai, "anthropic": anthropic, "gemini": gemini, "offline": offline}
