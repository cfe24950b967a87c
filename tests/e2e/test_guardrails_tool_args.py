"""Tool-call arguments in streamed answers through the real Envoy: a response guard whose scope has
toolInput masks (or rejects) what the model writes into a tool call, on chat and Messages clients,
whichever provider answered; without toolInput the arguments pass as they came.

The mock provider calls the client's tool with arguments from its schema (a ``const`` email here),
streamed in two fragments that cut the address in the middle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.guardrail_helpers import (
    CLIENTS,
    PROVIDERS,
    guarded_gateway,
    record_of,
    route,
    sse_events,
    stream_error,
)

EMAIL = "jane.roe@example.org"
SCHEMA = {"type": "object", "properties": {"to": {"type": "string", "const": EMAIL}}}
RULES = [{"builtin": "email"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    def routes(host: str, _: str) -> list[dict]:
        out = []
        for provider in ("openai", "anthropic"):
            mask = {"response": [{"regex": {"rules": RULES}, "scope": ["messages", "toolInput"]}]}
            reject = {
                "response": [
                    {
                        "regex": {"action": "reject", "rules": RULES},
                        "scope": ["toolInput"],
                        "rejection": {"body": "no addresses in tool calls"},
                    }
                ]
            }
            text_only = {"response": [{"regex": {"rules": RULES}}]}
            out += [
                route(f"toolmask-{provider}", provider, host, mask),
                route(f"toolreject-{provider}", provider, host, reject),
                route(f"textonly-{provider}", provider, host, text_only),
            ]
        return out

    with guarded_gateway(tmp_path_factory.mktemp("guard-tools"), routes) as gateway:
        yield gateway


def call_tool(gw: Gateway, client: str, route_name: str, stream: bool = True) -> httpx.Response:
    """A turn that the mock answers with a call of the ``send`` tool."""
    model = PROVIDERS[route_name.rsplit("-", 1)[-1]][2]
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "mail her"}],
        "stream": stream,
    }
    if client == "messages":
        body |= {"max_tokens": 256, "tools": [{"name": "send", "input_schema": SCHEMA}]}
        path = f"/{route_name}/v1/messages"
    else:
        body["tools"] = [{"type": "function", "function": {"name": "send", "parameters": SCHEMA}}]
        path = f"/{route_name}/v1/chat/completions"
    return httpx.post(gw.url + path, json=body, timeout=20)


def tool_arguments(client: str, resp: httpx.Response) -> list[str]:
    """Each tool call's arguments as the client assembles them."""
    calls: dict[int, str] = {}
    for name, d in sse_events(resp.text):
        if client == "messages":
            if name == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
                calls[d["index"]] = calls.get(d["index"], "") + d["delta"]["partial_json"]
        elif isinstance(d, dict) and d.get("choices"):
            for call in d["choices"][0]["delta"].get("tool_calls") or []:
                calls[call["index"]] = calls.get(call["index"], "") + (call.get("function") or {}).get(
                    "arguments", ""
                )
    return list(calls.values())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_tool_arguments_are_masked_in_the_stream(gw: Gateway, client: str, provider: str) -> None:
    plain = call_tool(gw, client, f"textonly-{provider}")
    assert [json.loads(a) for a in tool_arguments(client, plain)] == [{"to": EMAIL}]  # the provider's call
    resp = call_tool(gw, client, f"toolmask-{provider}")
    assert resp.status_code == 200, resp.text
    assert [json.loads(a) for a in tool_arguments(client, resp)] == [{"to": "<EMAIL_ADDRESS>"}]
    assert "jane.ro" not in resp.text and "example.org" not in resp.text
    assert record_of(gw, resp)["guardrails"] == [
        {"phase": "response", "guard": "regex", "action": "mask", "matched": ["email"]}
    ]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_reject_in_tool_arguments_ends_the_stream_with_an_error_event(
    gw: Gateway, client: str, provider: str
) -> None:
    resp = call_tool(gw, client, f"toolreject-{provider}")
    assert resp.status_code == 200
    assert stream_error(client, resp)["message"] == "no addresses in tool calls"
    assert "jane.ro" not in resp.text and "example.org" not in resp.text
    assert record_of(gw, resp)["guardrails"][-1]["action"] == "reject"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_tool_arguments_of_a_whole_answer_are_masked(gw: Gateway, client: str, provider: str) -> None:
    resp = call_tool(gw, client, f"toolmask-{provider}", stream=False)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    if client == "messages":
        calls = [b["input"] for b in body["content"] if b["type"] == "tool_use"]
    else:
        calls = [json.loads(c["function"]["arguments"]) for c in body["choices"][0]["message"]["tool_calls"]]
    assert calls == [{"to": "<EMAIL_ADDRESS>"}] and EMAIL not in resp.text
