"""What the guardrail end-to-end tests share: providers, sample values, clients and readers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    BEDROCK_KEY,
    GEMINI_KEY,
    OPENAI_KEY,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

# provider name -> (provider spec, key, the model a client asks for)
PROVIDERS: dict[str, tuple[dict, str, str]] = {
    "openai": ({"openAI": {}}, OPENAI_KEY, "gpt-4o"),
    "anthropic": ({"anthropic": {}}, ANTHROPIC_KEY, "claude-sonnet-4-6"),
    "gemini": ({"gemini": {}}, GEMINI_KEY, "gemini-2.5-flash"),
    "bedrock": (
        {"bedrock": {"region": "us-west-2"}},
        BEDROCK_KEY,
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    ),
}
# builtin -> (a value it matches, its mask token)
SAMPLES: dict[str, tuple[str, str]] = {
    "ssn": ("123-45-6789", "<SSN>"),
    "creditCard": ("4111 1111 1111 1111", "<CREDIT_CARD>"),
    "phoneNumber": ("(555) 123-4567", "<PHONE_NUMBER>"),
    "email": ("jane.roe@example.org", "<EMAIL_ADDRESS>"),
    "caSin": ("046 454 286", "<CA_SIN>"),
}
BUILTIN_RULES = [{"builtin": name} for name in SAMPLES]
CLIENTS = ("chat", "messages")
PROMPT_LOGGING = {"logging": {"fields": {"add": {"prompt": "llm.prompt"}}}}


def route(name: str, provider: str, host: str, prompt_guard: dict) -> dict:
    spec, key, _ = PROVIDERS[provider]
    return provider_route(name, f"/{name}", spec, host, key, ai={"promptGuard": prompt_guard})


@contextmanager
def guarded_gateway(
    tmp: Path, routes: Callable[[str, str], list[dict]], config: dict | None = None
) -> Iterator[Gateway]:
    """A gateway with a mock of its own; ``routes(host, mock_url)`` gives the routes."""
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    cfg = listener_config(routes(host, f"http://{host}"), maxRequestBytes=1024 * 1024, sidecarTimeout="5s")
    cfg["config"].update(config or {})
    with running([mock], lambda: launch(tmp, cfg, mock)) as gw:
        yield gw


def send(
    gw: Gateway,
    client: str,
    route_name: str,
    text: str,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    model: str | None = None,
) -> httpx.Response:
    """One user turn on ``route_name`` from a chat completions or a Messages client."""
    model = model or PROVIDERS[route_name.rsplit("-", 1)[-1]][2]
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    if client == "messages":
        body["max_tokens"] = 256
        path = f"/{route_name}/v1/messages"
    else:
        path = f"/{route_name}/v1/chat/completions"
    return httpx.post(gw.url + path, json=body, headers=headers or {}, timeout=20)


def reply_pieces(*pieces: str) -> dict[str, str]:
    """Headers making the mock answer with exactly these text deltas."""
    return {"x-mock-reply-pieces": json.dumps(list(pieces))}


def sse_events(raw: str) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        payload = "\n".join(data)
        out.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return out


def answer_text(client: str, resp: httpx.Response) -> str:
    """The answer's text as the client assembles it (whole or streamed)."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        events = sse_events(resp.text)
        if client == "messages":
            return "".join(
                d["delta"]["text"]
                for n, d in events
                if n == "content_block_delta" and d["delta"].get("type") == "text_delta"
            )
        return "".join(
            (d["choices"][0]["delta"].get("content") or "")
            for _, d in events
            if isinstance(d, dict) and d.get("choices")
        )
    body = resp.json()
    if client == "messages":
        return "".join(b["text"] for b in body["content"] if b["type"] == "text")
    return body["choices"][0]["message"]["content"]


def error_of(client: str, resp: httpx.Response) -> tuple[str, str | None]:
    """(message, code or Anthropic type) of an error answer, checking its shape."""
    body = resp.json()
    if client == "messages":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        return body["error"]["message"], body["error"]["type"]
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]["message"], body["error"]["code"]


def stream_error(client: str, resp: httpx.Response) -> dict:
    """The error event that ends a stream, checking it is the last thing the client gets."""
    events = sse_events(resp.text)
    if client == "messages":
        name, data = events[-1]
        assert name == "error" and data["type"] == "error", events[-3:]
        return data["error"]  # type: ignore[no-any-return]
    assert events[-1][1] == "[DONE]", events[-3:]
    return events[-2][1]["error"]  # type: ignore[no-any-return]


def provider_texts(gw: Gateway) -> str:
    """Everything the provider received since the last clear, as text."""
    return json.dumps([r["body"] for r in gw.mock.requests()])


def usage_record(gw: Gateway, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    log = Path(gw.stack.workdir) / "extproc.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


def record_of(gw: Gateway, resp: httpx.Response) -> dict[str, Any]:
    return usage_record(gw, resp.headers["x-gateway-request-id"])


def metric(gw: Gateway, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{gw.config['config']['metricsPort']}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )
