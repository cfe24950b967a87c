"""Tests for the built-in mock LLM provider (extproc/mock): real server on a free port, driven with httpx."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage

from extproc.mock import eventstream
from extproc.mock.conversation import Conversation, Tool, plan_reply, text_pieces, value_from_schema
from extproc.mock.server import DEFAULT_FIXTURE_DIR, create_app, match_route

REPO = Path(__file__).resolve().parents[2]

OPENAI_H = {"Authorization": "Bearer sk-test"}
ANTHROPIC_H = {"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"}
GEMINI_H = {"x-goog-api-key": "g-key"}
VERTEX_H = {"Authorization": "Bearer ya29.token"}
BEDROCK_H = {"Authorization": "Bearer bedrock-key"}

WEATHER_TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "ratio": {"type": "number"},
        "metric": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}},
        },
    },
    "required": ["city"],
}
WEATHER_ARGS = {
    "city": "mock",
    "days": 1,
    "ratio": 1,
    "metric": True,
    "unit": "celsius",
    "where": {"lat": 1, "tags": ["mock"]},
}


# --- server harness -----------------------------------------------------------------------------------


class ServerThread:
    """Runs an aiohttp app on its own loop in a background thread, bound to a free port."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> str:
        self.thread.start()
        assert self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _serve(app: web.Application) -> Iterator[httpx.Client]:
    server = ServerThread(app)
    base = server.start()
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client
    server.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    yield from _serve(create_app())


@pytest.fixture(scope="module")
def named_client() -> Iterator[httpx.Client]:
    yield from _serve(create_app(name="B"))


@pytest.fixture(scope="module")
def failing_client() -> Iterator[httpx.Client]:
    yield from _serve(create_app(force_status=503))


# --- wire helpers -------------------------------------------------------------------------------------


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """Parse SSE text into (event name, data) pairs; accepts LF and CRLF framing."""
    text = raw.decode().replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((name, "\n".join(data)))
    return events


def decode_eventstream(raw: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return list(buffer)


def openai_body(text: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def openai_tools(*names: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": n, "parameters": WEATHER_TOOL_SCHEMA}} for n in names]


def anthropic_body(text: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def gemini_body(text: str = "hello gemini") -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def bedrock_body(text: str = "hello bedrock", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}], **extra}


VERTEX_BASE = "/v1/projects/p1/locations/us-east5/publishers"
BEDROCK_MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
BEDROCK_PATH = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0"


def sigv4_headers(url: str, body: bytes, service: str = "bedrock") -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), service, "us-east-1").add_auth(request)
    return dict(request.headers)


def strip_ids(raw: bytes) -> bytes:
    return re.sub(rb"mock(-resp-)?\d+", b"mockN", raw)


# --- OpenAI / Azure -----------------------------------------------------------------------------------


def test_openai_non_streaming_shape(client: httpx.Client) -> None:
    resp = client.post("/v1/chat/completions", json=openai_body("What is up"), headers=OPENAI_H)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello from mock openai (gpt-4o): What is up",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] == 8
    assert body["usage"]["total_tokens"] == 11


def test_openai_streaming_with_include_usage(client: httpx.Client) -> None:
    payload = openai_body("stream me please", stream=True, stream_options={"include_usage": True})
    resp = client.post("/v1/chat/completions", json=payload, headers=OPENAI_H)
    assert resp.headers["content-type"] == "text/event-stream"
    events = sse_events(resp.content)
    assert events[-1] == (None, "[DONE]")
    chunks = [orjson.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "Hello from mock openai (gpt-4o): stream me please"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 3 + 8


def test_openai_streaming_without_usage_has_no_usage_field(client: httpx.Client) -> None:
    resp = client.post("/v1/chat/completions", json=openai_body(stream=True), headers=OPENAI_H)
    chunks = [orjson.loads(d) for _, d in sse_events(resp.content)[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_tool_call_args_from_schema(client: httpx.Client) -> None:
    payload = openai_body("weather?", tools=openai_tools("get_weather"))
    body = client.post("/v1/chat/completions", json=payload, headers=OPENAI_H).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == WEATHER_ARGS


def test_openai_parallel_and_choice_controls(client: httpx.Client) -> None:
    tools = openai_tools("a", "b", "c")

    def names(**extra: Any) -> list[str] | None:
        body = client.post(
            "/v1/chat/completions", json=openai_body(tools=tools, **extra), headers=OPENAI_H
        ).json()
        calls = body["choices"][0]["message"].get("tool_calls")
        return None if calls is None else [c["function"]["name"] for c in calls]

    assert names() == ["a", "b"]
    assert names(parallel_tool_calls=False) == ["a"]
    assert names(tool_choice={"type": "function", "function": {"name": "c"}}) == ["c"]
    assert names(tool_choice="none") is None


def test_openai_streaming_tool_call_deltas(client: httpx.Client) -> None:
    payload = openai_body(tools=openai_tools("get_weather"), stream=True)
    chunks = [
        orjson.loads(d)
        for _, d in sse_events(client.post("/v1/chat/completions", json=payload, headers=OPENAI_H).content)[
            :-1
        ]
    ]
    deltas = [
        c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"]["name"] == "get_weather"
    assert all("id" not in d for d in deltas[1:])
    assert len(deltas) >= 3  # header delta plus split argument fragments
    assert orjson.loads("".join(d["function"]["arguments"] for d in deltas)) == WEATHER_ARGS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_tool_result_reply(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "rainy and cold"},
    ]
    payload = {"model": "gpt-4o", "messages": messages, "tools": openai_tools("get_weather")}
    body = client.post("/v1/chat/completions", json=payload, headers=OPENAI_H).json()
    assert body["choices"][0]["message"]["content"] == "Tool said: rainy and cold"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_openai_images_and_truncation(client: httpx.Client) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    content = [{"type": "text", "text": "x" * 300}, image, image]
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    text = client.post("/v1/chat/completions", json=payload, headers=OPENAI_H).json()["choices"][0][
        "message"
    ]["content"]
    assert text == "Hello from mock openai (gpt-4o): " + "x" * 200 + " (saw 2 images)"


def test_openai_max_tokens_truncates_with_length(client: httpx.Client) -> None:
    body = client.post("/v1/chat/completions", json=openai_body(max_tokens=3), headers=OPENAI_H).json()
    assert body["choices"][0]["message"]["content"] == "Hello from mock"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_openai_compatible_base_url(client: httpx.Client) -> None:
    resp = client.post("/api/openrouter/v1/chat/completions", json=openai_body(), headers=OPENAI_H)
    assert resp.json()["choices"][0]["message"]["content"].startswith("Hello from mock openai (gpt-4o)")


def test_openai_missing_messages_is_400(client: httpx.Client) -> None:
    resp = client.post("/v1/chat/completions", json={"model": "gpt-4o"}, headers=OPENAI_H)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    bad = client.post("/v1/chat/completions", content=b"{nope", headers=OPENAI_H)
    assert bad.status_code == 400


def test_azure_chat_and_embeddings(client: httpx.Client) -> None:
    path = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    payload = {"messages": [{"role": "user", "content": "hey azure"}]}
    body = client.post(path, json=payload, headers={"api-key": "az-key"}).json()
    assert body["model"] == "my-gpt4o"
    assert body["choices"][0]["message"]["content"] == "Hello from mock azure (my-gpt4o): hey azure"
    missing_version = client.post(
        "/openai/deployments/d/chat/completions", json=payload, headers={"api-key": "k"}
    )
    assert missing_version.status_code == 400
    emb = client.post(
        "/openai/deployments/emb/embeddings?api-version=2024-10-21",
        json={"input": ["a", "b"]},
        headers=VERTEX_H,
    ).json()
    assert [d["index"] for d in emb["data"]] == [0, 1]
    assert emb["model"] == "emb"


def test_openai_embeddings_and_models(client: httpx.Client) -> None:
    payload = {"model": "text-embedding-3-small", "input": "hello world", "dimensions": 4}
    first = client.post("/v1/embeddings", json=payload, headers=OPENAI_H).json()
    second = client.post("/v1/embeddings", json=payload, headers=OPENAI_H).json()
    assert first == second  # deterministic
    (item,) = first["data"]
    assert len(item["embedding"]) == 4
    assert all(-1 <= x <= 1 for x in item["embedding"])
    assert first["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    b64 = client.post(
        "/v1/embeddings", json={**payload, "encoding_format": "base64"}, headers=OPENAI_H
    ).json()
    floats = struct.unpack("<4f", base64.b64decode(b64["data"][0]["embedding"]))
    assert floats == pytest.approx(item["embedding"], abs=1e-6)
    models = client.get("/v1/models", headers=OPENAI_H).json()
    assert models["object"] == "list"
    assert "gpt-4o" in {m["id"] for m in models["data"]}


# --- Anthropic ----------------------------------------------------------------------------------------


def test_anthropic_non_streaming_shape(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/messages", json=anthropic_body("hello claude", system="be brief"), headers=ANTHROPIC_H
    )
    body = resp.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-sonnet-4-5"
    assert body["content"] == [
        {"type": "text", "text": "Hello from mock anthropic (claude-sonnet-4-5): hello claude"}
    ]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] == 4  # system + user words
    assert body["usage"]["output_tokens"] == 7


def test_anthropic_streaming_event_sequence(client: httpx.Client) -> None:
    resp = client.post("/v1/messages", json=anthropic_body(stream=True), headers=ANTHROPIC_H)
    assert resp.headers["content-type"] == "text/event-stream"
    events = sse_events(resp.content)
    names = [name for name, _ in events]
    datas = [orjson.loads(d) for _, d in events]
    assert all(name == data["type"] for name, data in zip(names, datas, strict=True))
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
    assert text == "Hello from mock anthropic (claude-sonnet-4-5): hi there"
    assert datas[0]["message"]["usage"]["input_tokens"] == 2
    delta = datas[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 7


def test_anthropic_streaming_tool_use(client: httpx.Client) -> None:
    tools = [
        {"name": "get_weather", "input_schema": WEATHER_TOOL_SCHEMA},
        {"name": "other", "input_schema": {"type": "object"}},
    ]
    payload = anthropic_body(
        tools=tools, tool_choice={"type": "auto", "disable_parallel_tool_use": True}, stream=True
    )
    datas = [
        orjson.loads(d)
        for _, d in sse_events(client.post("/v1/messages", json=payload, headers=ANTHROPIC_H).content)
    ]
    start = next(d for d in datas if d["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "get_weather"
    assert start["content_block"]["input"] == {}
    partial = [d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta"]
    assert all(d["delta"]["type"] == "input_json_delta" for d in datas if d["type"] == "content_block_delta")
    assert orjson.loads("".join(partial)) == WEATHER_ARGS
    assert datas[-2]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_parallel_tools_and_tool_result(client: httpx.Client) -> None:
    tools = [
        {"name": "a", "input_schema": {"type": "object"}},
        {"name": "b", "input_schema": {"type": "object"}},
    ]
    body = client.post("/v1/messages", json=anthropic_body(tools=tools), headers=ANTHROPIC_H).json()
    assert [b["name"] for b in body["content"]] == ["a", "b"]
    assert body["stop_reason"] == "tool_use"
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]}
            ],
        },
    ]
    follow = client.post(
        "/v1/messages", json={**anthropic_body(tools=tools), "messages": messages}, headers=ANTHROPIC_H
    ).json()
    assert follow["content"] == [{"type": "text", "text": "Tool said: 42"}]


def test_anthropic_validation_errors(client: httpx.Client) -> None:
    no_max = client.post(
        "/v1/messages",
        json={"model": "c", "messages": [{"role": "user", "content": "x"}]},
        headers=ANTHROPIC_H,
    )
    assert no_max.status_code == 400
    assert no_max.json()["type"] == "error"
    assert no_max.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in no_max.json()["error"]["message"]
    no_version = client.post("/v1/messages", json=anthropic_body(), headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    assert "anthropic-version" in no_version.json()["error"]["message"]


def test_anthropic_count_tokens(client: httpx.Client) -> None:
    resp = client.post("/v1/messages/count_tokens", json=anthropic_body("one two three"), headers=ANTHROPIC_H)
    assert resp.json() == {"input_tokens": 3}


# --- Gemini / Vertex ----------------------------------------------------------------------------------


def test_gemini_generate_content(client: httpx.Client) -> None:
    resp = client.post(
        "/v1beta/models/gemini-2.5-flash:generateContent", json=gemini_body(), headers=GEMINI_H
    )
    body = resp.json()
    (candidate,) = body["candidates"]
    assert candidate["content"] == {
        "role": "model",
        "parts": [{"text": "Hello from mock gemini (gemini-2.5-flash): hello gemini"}],
    }
    assert candidate["finishReason"] == "STOP"
    assert body["modelVersion"] == "gemini-2.5-flash"
    assert body["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 7, "totalTokenCount": 9}


def test_gemini_sse_stream_crlf_no_done(client: httpx.Client) -> None:
    resp = client.post(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=abc", json=gemini_body()
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    raw = resp.content
    assert raw.endswith(b"\r\n\r\n")
    assert b"[DONE]" not in raw
    blocks = [b for b in raw.split(b"\r\n\r\n") if b]
    assert len(blocks) >= 2 and all(b.startswith(b"data: ") for b in blocks)
    chunks = [orjson.loads(b[6:]) for b in blocks]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Hello from mock gemini (gemini-2.5-flash): hello gemini"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 7


def test_gemini_stream_without_alt_is_json_array(client: httpx.Client) -> None:
    resp = client.post("/v1beta/models/m1:streamGenerateContent", json=gemini_body(), headers=GEMINI_H)
    items = orjson.loads(resp.content)
    assert isinstance(items, list) and len(items) >= 2
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_function_call_and_response(client: httpx.Client) -> None:
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "lookup",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"q": {"type": "STRING"}, "n": {"type": "INTEGER"}},
                    },
                }
            ]
        }
    ]
    body = client.post(
        "/v1beta/models/m1:generateContent", json={**gemini_body(), "tools": tools}, headers=GEMINI_H
    ).json()
    assert body["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "lookup", "args": {"q": "mock", "n": 1}}}
    ]
    contents = [
        *gemini_body()["contents"],
        {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "lookup", "response": {"content": "found it"}}}],
        },
    ]
    follow = client.post(
        "/v1beta/models/m1:generateContent", json={"contents": contents, "tools": tools}, headers=GEMINI_H
    ).json()
    assert follow["candidates"][0]["content"]["parts"] == [{"text": "Tool said: found it"}]


def test_gemini_inline_image_counted(client: httpx.Client) -> None:
    parts = [{"text": "what is this"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]
    body = client.post(
        "/v1beta/models/m1:generateContent",
        json={"contents": [{"role": "user", "parts": parts}]},
        headers=GEMINI_H,
    ).json()
    assert body["candidates"][0]["content"]["parts"][0]["text"].endswith("what is this (saw 1 image)")


def test_vertex_gemini_and_anthropic(client: httpx.Client) -> None:
    gem = client.post(
        f"{VERTEX_BASE}/google/models/gemini-2.5-pro:generateContent",
        json=gemini_body("vx"),
        headers=VERTEX_H,
    )
    assert (
        gem.json()["candidates"][0]["content"]["parts"][0]["text"]
        == "Hello from mock vertex (gemini-2.5-pro): vx"
    )
    claude_path = f"{VERTEX_BASE}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    payload = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hey"}],
    }
    body = client.post(claude_path, json=payload, headers=VERTEX_H).json()
    assert body["model"] == "claude-sonnet-4-5@20250929"
    assert body["content"][0]["text"] == "Hello from mock vertex (claude-sonnet-4-5@20250929): hey"
    missing_version = client.post(
        claude_path, json={k: v for k, v in payload.items() if k != "anthropic_version"}, headers=VERTEX_H
    )
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["type"] == "invalid_request_error"
    with_model = client.post(claude_path, json={**payload, "model": "x"}, headers=VERTEX_H)
    assert with_model.status_code == 400
    stream = client.post(
        claude_path.replace(":rawPredict", ":streamRawPredict"),
        json={**payload, "stream": True},
        headers=VERTEX_H,
    )
    assert [n for n, _ in sse_events(stream.content)][-1] == "message_stop"


# --- Bedrock ------------------------------------------------------------------------------------------


def test_bedrock_converse_with_sigv4(client: httpx.Client) -> None:
    raw = orjson.dumps(bedrock_body())
    url = f"{client.base_url}{BEDROCK_PATH}/converse"
    resp = client.post(f"{BEDROCK_PATH}/converse", content=raw, headers=sigv4_headers(url, raw))
    assert resp.status_code == 200
    body = resp.json()
    assert body["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": f"Hello from mock bedrock ({BEDROCK_MODEL}): hello bedrock"}],
    }
    assert body["stopReason"] == "end_turn"
    assert body["usage"] == {"inputTokens": 2, "outputTokens": 7, "totalTokens": 9}


def test_bedrock_sigv4_wrong_service_rejected(client: httpx.Client) -> None:
    raw = orjson.dumps(bedrock_body())
    headers = sigv4_headers(f"{client.base_url}{BEDROCK_PATH}/converse", raw, service="s3")
    resp = client.post(f"{BEDROCK_PATH}/converse", content=raw, headers=headers)
    assert resp.status_code == 401
    assert "bedrock" in resp.json()["message"]
    assert resp.headers["x-amzn-ErrorType"].startswith("UnrecognizedClientException:")
    no_date = {
        k: v
        for k, v in sigv4_headers(f"{client.base_url}{BEDROCK_PATH}/converse", raw).items()
        if k.lower() != "x-amz-date"
    }
    assert client.post(f"{BEDROCK_PATH}/converse", content=raw, headers=no_date).status_code == 401


def test_bedrock_converse_stream_decodes(client: httpx.Client) -> None:
    resp = client.post(f"{BEDROCK_PATH}/converse-stream", json=bedrock_body(), headers=BEDROCK_H)
    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    messages = decode_eventstream(resp.content)
    types = [m.headers[":event-type"] for m in messages]
    assert types[0] == "messageStart"
    assert types[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(types[1:-3]) == {"contentBlockDelta"}
    assert all(
        m.headers[":message-type"] == "event" and m.headers[":content-type"] == "application/json"
        for m in messages
    )
    payloads = [orjson.loads(m.payload) for m in messages]
    text = "".join(p["delta"]["text"] for p in payloads[1:-3])
    assert text == f"Hello from mock bedrock ({BEDROCK_MODEL}): hello bedrock"
    assert payloads[-2]["stopReason"] == "end_turn"
    assert payloads[-1]["usage"]["totalTokens"] == 9


def test_bedrock_tool_use_stream_and_non_stream(client: httpx.Client) -> None:
    tool_config = {
        "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_TOOL_SCHEMA}}}]
    }
    body = client.post(
        f"{BEDROCK_PATH}/converse", json=bedrock_body(toolConfig=tool_config), headers=BEDROCK_H
    ).json()
    (block,) = body["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "get_weather"
    assert block["toolUse"]["input"] == WEATHER_ARGS
    assert body["stopReason"] == "tool_use"
    stream = client.post(
        f"{BEDROCK_PATH}/converse-stream", json=bedrock_body(toolConfig=tool_config), headers=BEDROCK_H
    )
    payloads = {m.headers[":event-type"]: [] for m in decode_eventstream(stream.content)}
    for m in decode_eventstream(stream.content):
        payloads[m.headers[":event-type"]].append(orjson.loads(m.payload))
    assert payloads["contentBlockStart"][0]["start"]["toolUse"]["name"] == "get_weather"
    fragments = [p["delta"]["toolUse"]["input"] for p in payloads["contentBlockDelta"]]
    assert orjson.loads("".join(fragments)) == WEATHER_ARGS
    assert payloads["messageStop"][0]["stopReason"] == "tool_use"


def test_bedrock_tool_result_reply(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": [{"text": "go"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "a", "input": {}}}]},
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"json": {"temp": 3}}], "status": "success"}}
            ],
        },
    ]
    body = client.post(f"{BEDROCK_PATH}/converse", json={"messages": messages}, headers=BEDROCK_H).json()
    assert body["output"]["message"]["content"] == [{"text": 'Tool said: {"temp":3}'}]


# --- provider-native embeddings -----------------------------------------------------------------------

GEMINI_EMBED_MODEL = "gemini-embedding-001"
GEMINI_BATCH_PATH = f"/v1beta/models/{GEMINI_EMBED_MODEL}:batchEmbedContents"
VERTEX_PREDICT_PATH = f"{VERTEX_BASE}/google/models/text-embedding-005:predict"
TITAN_V2_PATH = "/model/amazon.titan-embed-text-v2%3A0/invoke"
COHERE_V3_PATH = "/model/cohere.embed-english-v3/invoke"
COHERE_V4_PATH = "/model/cohere.embed-v4%3A0/invoke"
NOVA_PATH = "/model/amazon.nova-2-multimodal-embeddings-v1%3A0/invoke"


def gemini_embed_request(text: str, model: str = GEMINI_EMBED_MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": f"models/{model}", "content": {"parts": [{"text": text}]}, **extra}


def nova_body(value: str = "hello nova", **params: Any) -> dict[str, Any]:
    single = {
        "embeddingPurpose": "GENERIC_INDEX",
        "embeddingDimension": 256,
        "text": {"truncationMode": "END", "value": value},
        **params,
    }
    return {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": single,
    }


def test_gemini_batch_embed_contents(client: httpx.Client) -> None:
    payload = {
        "requests": [
            gemini_embed_request("hello world", outputDimensionality=8, taskType="RETRIEVAL_DOCUMENT"),
            gemini_embed_request("second text", outputDimensionality=8),
        ]
    }
    first = client.post(GEMINI_BATCH_PATH, json=payload, headers=GEMINI_H)
    assert first.status_code == 200
    body = first.json()
    assert [len(e["values"]) for e in body["embeddings"]] == [8, 8]
    assert client.post(GEMINI_BATCH_PATH, json=payload, headers=GEMINI_H).json() == body  # deterministic
    single = client.post(
        f"/v1beta/models/{GEMINI_EMBED_MODEL}:embedContent",
        json={"content": {"parts": [{"text": "hello world"}]}, "output_dimensionality": 8},
        headers=GEMINI_H,
    ).json()
    assert single == {"embedding": body["embeddings"][0]}
    # One text embeds the same on every provider of the mock.
    openai_vec = client.post(
        "/v1/embeddings", json={"model": "m", "input": "hello world", "dimensions": 8}, headers=OPENAI_H
    ).json()["data"][0]["embedding"]
    assert body["embeddings"][0]["values"] == openai_vec
    default = client.post(GEMINI_BATCH_PATH, json={"requests": [gemini_embed_request("x")]}, headers=GEMINI_H)
    assert len(default.json()["embeddings"][0]["values"]) == 16


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "requests is not specified"),
        ({"requests": [gemini_embed_request(str(i)) for i in range(101)]}, "at most 100 requests"),
        ({"requests": [gemini_embed_request("x", model="other-model")]}, "models/gemini-embedding-001"),
        ({"requests": [{"model": f"models/{GEMINI_EMBED_MODEL}"}]}, "content is not specified"),
        ({"requests": [gemini_embed_request("x", taskType="NOPE")]}, "task_type"),
        ({"requests": [gemini_embed_request("x", outputDimensionality=0)]}, "output_dimensionality"),
    ],
    ids=["no-requests", "over-100", "model-mismatch", "no-content", "bad-task", "zero-dims"],
)
def test_gemini_embed_validation(client: httpx.Client, payload: dict[str, Any], message: str) -> None:
    resp = client.post(GEMINI_BATCH_PATH, json=payload, headers=GEMINI_H)
    assert resp.status_code == 400
    _google_shape(resp)
    assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in resp.json()["error"]["message"]


def test_vertex_predict_embeddings(client: httpx.Client) -> None:
    payload = {
        "instances": [
            {"content": "hello world", "task_type": "RETRIEVAL_DOCUMENT", "title": "t"},
            {"content": "three word text"},
        ],
        "parameters": {"outputDimensionality": 8, "autoTruncate": False},
    }
    resp = client.post(VERTEX_PREDICT_PATH, json=payload, headers=VERTEX_H)
    assert resp.status_code == 200
    body = resp.json()
    stats = [p["embeddings"]["statistics"] for p in body["predictions"]]
    assert stats == [{"truncated": False, "token_count": 2}, {"truncated": False, "token_count": 3}]
    assert [len(p["embeddings"]["values"]) for p in body["predictions"]] == [8, 8]
    assert body["metadata"] == {"billableCharacterCount": len("hello world") + len("three word text")}
    multimodal = client.post(
        f"{VERTEX_BASE}/google/models/multimodalembedding@001:predict",
        json={"instances": [{"text": "a cat"}], "parameters": {"dimension": 128}},
        headers=VERTEX_H,
    ).json()
    assert len(multimodal["predictions"][0]["textEmbedding"]) == 128
    # :predict is embeddings; every other action on Google models is still Gemini.
    assert match_route("POST", VERTEX_PREDICT_PATH)[:2] == ("vertex-gemini", "vertex_predict")
    generate = f"{VERTEX_BASE}/google/models/gemini-2.5-pro:generateContent"
    assert match_route("POST", generate)[:2] == ("vertex-gemini", "gemini")
    assert match_route("POST", GEMINI_BATCH_PATH)[:2] == ("gemini", "gemini_embed")
    assert match_route("POST", "/v1beta/models/m:generateContent")[:2] == ("gemini", "gemini")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "instances"),
        ({"instances": [{"content": str(i)} for i in range(251)]}, "too many instances"),
        ({"instances": [{"text": "x"}]}, "content"),
        ({"instances": [{"content": "x", "task_type": "NOPE"}]}, "task_type"),
        (
            {"instances": [{"content": "x"}], "parameters": {"outputDimensionality": "8"}},
            "outputDimensionality",
        ),
    ],
    ids=["no-instances", "over-250", "no-content", "bad-task", "bad-dims"],
)
def test_vertex_predict_validation(client: httpx.Client, payload: dict[str, Any], message: str) -> None:
    resp = client.post(VERTEX_PREDICT_PATH, json=payload, headers=VERTEX_H)
    assert resp.status_code == 400
    _google_shape(resp)
    assert message in resp.json()["error"]["message"]


def test_bedrock_invoke_titan(client: httpx.Client) -> None:
    raw = orjson.dumps(
        {"inputText": "hello titan world", "dimensions": 256, "embeddingTypes": ["float", "binary"]}
    )
    url = f"{client.base_url}{TITAN_V2_PATH}"
    resp = client.post(TITAN_V2_PATH, content=raw, headers=sigv4_headers(url, raw))
    assert resp.status_code == 200
    assert resp.headers["x-amzn-bedrock-input-token-count"] == "3"
    body = resp.json()
    assert len(body["embedding"]) == 256
    assert body["inputTextTokenCount"] == 3
    assert body["embeddingsByType"]["float"] == body["embedding"]
    assert set(body["embeddingsByType"]["binary"]) <= {0, 1}
    default = client.post(TITAN_V2_PATH, json={"inputText": "x"}, headers=BEDROCK_H).json()
    assert set(default) == {"embedding", "inputTextTokenCount", "embeddingsByType"}
    v1 = client.post("/model/amazon.titan-embed-text-v1/invoke", json={"inputText": "x"}, headers=BEDROCK_H)
    assert set(v1.json()) == {"embedding", "inputTextTokenCount"}
    image = client.post(
        "/model/amazon.titan-embed-image-v1/invoke",
        json={"inputText": "x", "embeddingConfig": {"outputEmbeddingLength": 384}},
        headers=BEDROCK_H,
    )
    assert len(image.json()["embedding"]) == 384


def test_bedrock_invoke_cohere(client: httpx.Client) -> None:
    v3 = client.post(
        COHERE_V3_PATH, json={"texts": ["a b", "c"], "input_type": "search_document"}, headers=BEDROCK_H
    )
    assert v3.status_code == 200
    body = v3.json()
    assert body["response_type"] == "embeddings_floats"
    assert body["texts"] == ["a b", "c"]
    assert body["id"].startswith("mock-embed-")
    assert [len(v) for v in body["embeddings"]] == [16, 16]
    v4 = client.post(
        COHERE_V4_PATH,
        json={
            "texts": ["a"],
            "input_type": "search_query",
            "output_dimension": 256,
            "embedding_types": ["float", "int8", "ubinary"],
            "truncate": "RIGHT",
        },
        headers=BEDROCK_H,
    ).json()
    assert v4["response_type"] == "embeddings_by_type"
    assert set(v4["embeddings"]) == {"float", "int8", "ubinary"}
    assert len(v4["embeddings"]["float"][0]) == 256
    assert len(v4["embeddings"]["ubinary"][0]) == 32  # 8 dimensions per byte
    assert all(-128 <= x <= 127 for x in v4["embeddings"]["int8"][0])


def test_bedrock_invoke_nova(client: httpx.Client) -> None:
    resp = client.post(NOVA_PATH, json=nova_body(), headers=BEDROCK_H)
    assert resp.status_code == 200
    ((item,),) = resp.json().values()
    assert item["embeddingType"] == "TEXT"
    assert len(item["embedding"]) == 256
    assert resp.headers["x-amzn-bedrock-input-token-count"] == "2"


@pytest.mark.parametrize(
    ("path", "payload", "message"),
    [
        (
            "/model/amazon.titan-embed-text-v1/invoke",
            {"inputText": "x", "dimensions": 256},
            "extraneous key [dimensions]",
        ),
        (TITAN_V2_PATH, {"inputText": "x", "dimensions": 768}, "#/dimensions: 768 is not a valid enum value"),
        (TITAN_V2_PATH, {"dimensions": 256}, "required key [inputText] not found"),
        (TITAN_V2_PATH, {"inputText": ["a", "b"]}, "expected type: String, found: JSONArray"),
        (COHERE_V3_PATH, {"texts": ["a"]}, "required key [input_type] not found"),
        (
            COHERE_V3_PATH,
            {"texts": [str(i) for i in range(97)], "input_type": "search_query"},
            "maximum item count: 96",
        ),
        (
            COHERE_V3_PATH,
            {"texts": ["a"], "input_type": "search_query", "output_dimension": 256},
            "extraneous key [output_dimension]",
        ),
        (COHERE_V4_PATH, {"texts": ["a"], "input_type": "search_query", "truncate": "END"}, "#/truncate"),
        (NOVA_PATH, {**nova_body(), "taskType": "SEGMENTED_EMBEDDING"}, "#/taskType"),
        (NOVA_PATH, nova_body(embeddingDimension=512), "embeddingDimension"),
        (NOVA_PATH, nova_body(text={"value": "x"}), "required key [truncationMode]"),
        (
            NOVA_PATH,
            {
                "taskType": "SINGLE_EMBEDDING",
                "singleEmbeddingParams": {"text": {"truncationMode": "END", "value": "x"}},
            },
            "required key [embeddingPurpose]",
        ),
        (BEDROCK_PATH + "/invoke", {"messages": []}, "embedding models only"),
    ],
    ids=[
        "titan-v1-dims",
        "titan-v2-dims-enum",
        "titan-no-text",
        "titan-array",
        "cohere-no-input-type",
        "cohere-over-96",
        "cohere-v3-output-dimension",
        "cohere-v4-truncate",
        "nova-segmented",
        "nova-dims",
        "nova-no-truncation-mode",
        "nova-no-purpose",
        "chat-model",
    ],
)
def test_bedrock_invoke_validation(
    client: httpx.Client, path: str, payload: dict[str, Any], message: str
) -> None:
    resp = client.post(path, json=payload, headers=BEDROCK_H)
    assert resp.status_code == 400
    _bedrock_shape(resp)
    assert resp.headers["x-amzn-ErrorType"].startswith("ValidationException:")
    assert message in resp.json()["message"]


def test_botocore_invoke_model_embeddings(client: httpx.Client) -> None:
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError

    bedrock = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=str(client.base_url),
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )
    out = bedrock.invoke_model(
        modelId="amazon.titan-embed-text-v2:0", body=orjson.dumps({"inputText": "boto embed"})
    )
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"
    assert len(orjson.loads(out["body"].read())["embedding"]) == 16
    with pytest.raises(ClientError) as info:
        bedrock.invoke_model(modelId="cohere.embed-english-v3", body=orjson.dumps({"texts": ["x"]}))
    assert info.value.response["Error"]["Code"] == "ValidationException"


# The translator's upstream bodies, sent to the mock (which checks them as the real APIs do) and the
# answers translated back: every family end to end.
TRANSLATED: list[tuple[str, str, str, dict[str, str], int | None]] = [
    ("openai", "text-embedding-3-small", "/v1/embeddings", OPENAI_H, 8),
    ("azure", "emb", "/openai/deployments/emb/embeddings?api-version=2024-10-21", {"api-key": "k"}, 8),
    ("gemini", GEMINI_EMBED_MODEL, "", GEMINI_H, 8),
    ("vertex", "text-embedding-005", VERTEX_PREDICT_PATH, VERTEX_H, 8),
    (
        "vertex",
        "multimodalembedding@001",
        f"{VERTEX_BASE}/google/models/multimodalembedding@001:predict",
        VERTEX_H,
        128,
    ),
    ("bedrock", "amazon.titan-embed-text-v2:0", "", BEDROCK_H, 256),
    ("bedrock", "amazon.titan-embed-text-v1", "", BEDROCK_H, None),
    ("bedrock", "amazon.titan-embed-image-v1", "", BEDROCK_H, 384),
    ("bedrock", "cohere.embed-english-v3", "", BEDROCK_H, None),
    ("bedrock", "cohere.embed-v4:0", "", BEDROCK_H, 512),
    ("bedrock", "amazon.nova-2-multimodal-embeddings-v1:0", "", BEDROCK_H, 1024),
]


@pytest.mark.parametrize(
    ("kind", "model", "path", "headers", "dims"), TRANSLATED, ids=[f"{k}-{m}" for k, m, *_ in TRANSLATED]
)
def test_translator_against_mock(
    client: httpx.Client, kind: str, model: str, path: str, headers: dict[str, str], dims: int | None
) -> None:
    from extproc.mock.formats import embedding_vector
    from extproc.translate import embeddings as emb

    single = emb.family(kind, model) in ("bedrock-titan", "bedrock-nova")
    texts = ["hello world"] if single else ["hello world", "second input here"]
    req: dict[str, Any] = {
        "model": "client-alias",
        "input": texts if len(texts) > 1 else texts[0],
        "encoding_format": "base64",
    }
    if dims is not None:
        req["dimensions"] = dims
    resp = client.post(
        path or emb.upstream_path(kind, model), json=emb.request(kind, req, model), headers=headers
    )
    assert resp.status_code == 200, resp.text
    out = emb.response(kind, resp.json(), model, req)
    assert out["object"] == "list"
    assert [d["index"] for d in out["data"]] == list(range(len(texts)))
    size = dims or 16
    for text, item in zip(texts, out["data"], strict=True):
        vector = struct.unpack(f"<{size}f", base64.b64decode(item["embedding"]))
        assert vector == pytest.approx(embedding_vector(text, size), abs=1e-6)
    assert out["usage"]["prompt_tokens"] == out["usage"]["total_tokens"]


# --- auth and error shapes ----------------------------------------------------------------------------

Check = Callable[[httpx.Response], None]


def _openai_shape(resp: httpx.Response) -> None:
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def _anthropic_shape(resp: httpx.Response) -> None:
    body = resp.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}


def _google_shape(resp: httpx.Response) -> None:
    error = resp.json()["error"]
    assert error["code"] == resp.status_code and isinstance(error["status"], str)


def _bedrock_shape(resp: httpx.Response) -> None:
    assert set(resp.json()) == {"message"}
    assert "x-amzn-ErrorType" in resp.headers


PROVIDER_CALLS: dict[str, tuple[str, dict[str, Any], dict[str, str], Check]] = {
    "openai": ("/v1/chat/completions", openai_body(), OPENAI_H, _openai_shape),
    "azure": (
        "/openai/deployments/d/chat/completions?api-version=2024-10-21",
        openai_body(),
        {"api-key": "k"},
        _openai_shape,
    ),
    "anthropic": ("/v1/messages", anthropic_body(), ANTHROPIC_H, _anthropic_shape),
    "gemini": ("/v1beta/models/m1:generateContent", gemini_body(), GEMINI_H, _google_shape),
    "vertex": (f"{VERTEX_BASE}/google/models/m1:generateContent", gemini_body(), VERTEX_H, _google_shape),
    "bedrock": (f"{BEDROCK_PATH}/converse", bedrock_body(), BEDROCK_H, _bedrock_shape),
    "gemini-embed": (GEMINI_BATCH_PATH, {"requests": [gemini_embed_request("x")]}, GEMINI_H, _google_shape),
    "vertex-embed": (VERTEX_PREDICT_PATH, {"instances": [{"content": "x"}]}, VERTEX_H, _google_shape),
    "bedrock-embed": (TITAN_V2_PATH, {"inputText": "x"}, BEDROCK_H, _bedrock_shape),
}
NO_AUTH_HEADERS = {"anthropic": {"anthropic-version": "2023-06-01"}}


@pytest.mark.parametrize("provider", sorted(PROVIDER_CALLS))
def test_missing_and_invalid_auth_is_401(client: httpx.Client, provider: str) -> None:
    path, payload, headers, check = PROVIDER_CALLS[provider]
    missing = client.post(path, json=payload, headers=NO_AUTH_HEADERS.get(provider, {}))
    assert missing.status_code == 401
    check(missing)
    invalid = {
        k: ("Bearer invalid-x" if v.startswith("Bearer") else "invalid-x") if k != "anthropic-version" else v
        for k, v in headers.items()
    }
    bad = client.post(path, json=payload, headers=invalid)
    assert bad.status_code == 401
    check(bad)


def test_bearer_accepted_where_alternate(client: httpx.Client) -> None:
    bearer_anthropic = {"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}
    assert client.post("/v1/messages", json=anthropic_body(), headers=bearer_anthropic).status_code == 200
    azure_path = "/openai/deployments/d/chat/completions?api-version=2024-10-21"
    assert client.post(azure_path, json=openai_body(), headers=OPENAI_H).status_code == 200


@pytest.mark.parametrize("provider", sorted(PROVIDER_CALLS))
@pytest.mark.parametrize("status", [429, 500, 503])
def test_mock_status_in_provider_shape(client: httpx.Client, provider: str, status: int) -> None:
    path, payload, headers, check = PROVIDER_CALLS[provider]
    resp = client.post(path, json=payload, headers={**headers, "x-mock-status": str(status)})
    assert resp.status_code == status
    check(resp)


def test_mock_status_specific_error_types(client: httpx.Client) -> None:
    def anthropic_type(status: int) -> str:
        resp = client.post(
            "/v1/messages", json=anthropic_body(), headers={**ANTHROPIC_H, "x-mock-status": str(status)}
        )
        assert resp.status_code == status
        return resp.json()["error"]["type"]

    assert anthropic_type(429) == "rate_limit_error"
    assert anthropic_type(529) == "overloaded_error"
    assert anthropic_type(500) == "api_error"
    gem = client.post(
        "/v1beta/models/m1:generateContent", json=gemini_body(), headers={**GEMINI_H, "x-mock-status": "429"}
    )
    assert gem.json() == {
        "error": {"code": 429, "message": gem.json()["error"]["message"], "status": "RESOURCE_EXHAUSTED"}
    }
    bed = client.post(
        f"{BEDROCK_PATH}/converse", json=bedrock_body(), headers={**BEDROCK_H, "x-mock-status": "429"}
    )
    assert bed.headers["x-amzn-ErrorType"].startswith("ThrottlingException:")
    assert bed.headers["retry-after"] == "1"
    oai = client.post(
        "/v1/chat/completions", json=openai_body(), headers={**OPENAI_H, "x-mock-status": "429"}
    )
    assert oai.json()["error"]["code"] == "rate_limit_exceeded"


def test_force_status_instance(failing_client: httpx.Client) -> None:
    resp = failing_client.post("/v1/messages", json=anthropic_body(), headers=ANTHROPIC_H)
    assert resp.status_code == 503
    _anthropic_shape(resp)
    assert (
        failing_client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_H).status_code == 503
    )
    assert failing_client.get("/__mock/health").status_code == 200


def test_name_in_reply(named_client: httpx.Client) -> None:
    body = named_client.post("/v1/messages", json=anthropic_body("yo"), headers=ANTHROPIC_H).json()
    assert body["content"][0]["text"] == "Hello from mock anthropic[B] (claude-sonnet-4-5): yo"


def test_unknown_route_404(client: httpx.Client) -> None:
    assert client.post("/nope", json={}).status_code == 404


# --- controls -----------------------------------------------------------------------------------------


def _stream_request(provider: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    requests = {
        "openai": (
            "/v1/chat/completions",
            openai_body(stream=True, stream_options={"include_usage": True}),
            OPENAI_H,
        ),
        "anthropic": ("/v1/messages", anthropic_body(stream=True), ANTHROPIC_H),
        "gemini": ("/v1beta/models/m1:streamGenerateContent?alt=sse", gemini_body(), GEMINI_H),
        "bedrock": (f"{BEDROCK_PATH}/converse-stream", bedrock_body(), BEDROCK_H),
    }
    return requests[provider]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "bedrock"])
def test_chunk_bytes_joined_identical(client: httpx.Client, provider: str) -> None:
    path, payload, headers = _stream_request(provider)
    whole = client.post(path, json=payload, headers=headers).content
    pieces: list[bytes] = []
    chunked_headers = {**headers, "x-mock-chunk-bytes": "7", "x-mock-chunk-delay-ms": "1"}
    with client.stream("POST", path, json=payload, headers=chunked_headers) as resp:
        pieces.extend(resp.iter_raw())
    assert strip_ids(b"".join(pieces)) == strip_ids(whole)
    assert max(len(p) for p in pieces) <= 7  # delayed writes arrive as separate small reads
    assert len(pieces) >= len(whole) // 7


def test_chunk_bytes_non_streaming(client: httpx.Client) -> None:
    whole = client.post("/v1/messages", json=anthropic_body(), headers=ANTHROPIC_H)
    split = client.post(
        "/v1/messages", json=anthropic_body(), headers={**ANTHROPIC_H, "x-mock-chunk-bytes": "5"}
    )
    assert split.headers["content-length"] == str(len(split.content))
    assert strip_ids(split.content) == strip_ids(whole.content)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "bedrock"])
def test_gzip_control_encodes_streams_decodably_as_they_arrive(client: httpx.Client, provider: str) -> None:
    path, payload, headers = _stream_request(provider)
    plain = client.post(path, json=payload, headers=headers).content
    with client.stream("POST", path, json=payload, headers={**headers, "x-mock-gzip": "1"}) as resp:
        assert resp.headers["content-encoding"] == "gzip"
        raw = list(resp.iter_raw())
    unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
    first = unpack.decompress(raw[0])
    assert first and plain.startswith(first[:8])  # the first event decodes without the rest
    rest = b"".join(unpack.decompress(piece) for piece in raw[1:]) + unpack.flush()
    assert strip_ids(first + rest) == strip_ids(plain)


def test_gzip_control_encodes_bodies_and_errors(client: httpx.Client) -> None:
    whole = client.post("/v1/messages", json=anthropic_body(), headers={**ANTHROPIC_H, "x-mock-gzip": "1"})
    assert whole.headers["content-encoding"] == "gzip"
    assert whole.json()["type"] == "message"  # httpx decodes it
    failed = client.post(
        "/v1/messages",
        json=anthropic_body(),
        headers={**ANTHROPIC_H, "x-mock-gzip": "1", "x-mock-status": "529"},
    )
    assert failed.status_code == 529 and failed.headers["content-encoding"] == "gzip"
    assert failed.json()["error"]["type"] == "overloaded_error"


def test_stream_error_after_openai(client: httpx.Client) -> None:
    path, payload, headers = _stream_request("openai")
    events = sse_events(
        client.post(path, json=payload, headers={**headers, "x-mock-stream-error-after": "2"}).content
    )
    assert len(events) == 3
    assert "[DONE]" not in [d for _, d in events]
    assert orjson.loads(events[-1][1])["error"]["type"] == "server_error"


def test_stream_error_after_anthropic(client: httpx.Client) -> None:
    path, payload, headers = _stream_request("anthropic")
    events = sse_events(
        client.post(path, json=payload, headers={**headers, "x-mock-stream-error-after": "3"}).content
    )
    assert [n for n, _ in events] == ["message_start", "content_block_start", "ping", "error"]
    assert orjson.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_stream_error_after_gemini(client: httpx.Client) -> None:
    path, payload, headers = _stream_request("gemini")
    raw = client.post(path, json=payload, headers={**headers, "x-mock-stream-error-after": "1"}).content
    blocks = [orjson.loads(b[6:]) for b in raw.split(b"\r\n\r\n") if b]
    assert len(blocks) == 2
    assert "candidates" in blocks[0]
    assert blocks[1]["error"]["status"] == "UNAVAILABLE"


def test_stream_error_after_bedrock(client: httpx.Client) -> None:
    path, payload, headers = _stream_request("bedrock")
    raw = client.post(path, json=payload, headers={**headers, "x-mock-stream-error-after": "2"}).content
    messages = decode_eventstream(raw)
    assert len(messages) == 3
    assert [m.headers[":message-type"] for m in messages] == ["event", "event", "exception"]
    assert messages[-1].headers[":exception-type"] == "throttlingException"
    assert "message" in orjson.loads(messages[-1].payload)


def test_delay_ms(client: httpx.Client) -> None:
    start = time.monotonic()
    resp = client.post(
        "/v1/chat/completions", json=openai_body(), headers={**OPENAI_H, "x-mock-delay-ms": "150"}
    )
    assert resp.status_code == 200
    assert time.monotonic() - start >= 0.15


# --- fixtures -----------------------------------------------------------------------------------------


def test_conformance_corpus_is_present() -> None:
    # CI clones the repo beside shared/; a missing corpus is a failure, never a silent skip.
    assert DEFAULT_FIXTURE_DIR.is_dir(), f"conformance corpus missing at {DEFAULT_FIXTURE_DIR}"


def _corpus_cases() -> list[str]:
    if not DEFAULT_FIXTURE_DIR.is_dir():
        return []
    files = [p for p in DEFAULT_FIXTURE_DIR.rglob("*") if p.suffix in (".json", ".bin")]
    return sorted(str(p.relative_to(DEFAULT_FIXTURE_DIR)) for p in files)


@pytest.mark.parametrize(
    ("case", "file", "content_type"),
    [
        ("anthropic/stream_basic", "anthropic/stream_basic.json", "text/event-stream"),
        ("bedrock/basic.bin", "bedrock/basic.bin", "application/vnd.amazon.eventstream"),
        ("bedrock/basic", "bedrock/basic.json", "application/json"),
        ("vertex-gemini/basic", "vertex-gemini/basic.json", "application/json"),
        ("detect/broken-sse", "detect/broken-sse", "text/event-stream"),
    ],
)
def test_fixture_replay_byte_identical(client: httpx.Client, case: str, file: str, content_type: str) -> None:
    resp = client.post("/v1/messages", json=anthropic_body(), headers={**ANTHROPIC_H, "x-mock-fixture": case})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == content_type
    assert resp.content == (DEFAULT_FIXTURE_DIR / file).read_bytes()


def test_fixture_prefers_bin_for_streaming_requests(client: httpx.Client) -> None:
    headers = {**BEDROCK_H, "x-mock-fixture": "bedrock/basic"}
    stream = client.post(f"{BEDROCK_PATH}/converse-stream", json=bedrock_body(), headers=headers)
    assert stream.content == (DEFAULT_FIXTURE_DIR / "bedrock/basic.bin").read_bytes()
    assert stream.headers["content-type"] == "application/vnd.amazon.eventstream"
    plain = client.post(f"{BEDROCK_PATH}/converse", json=bedrock_body(), headers=headers)
    assert plain.content == (DEFAULT_FIXTURE_DIR / "bedrock/basic.json").read_bytes()


def test_every_corpus_file_replays(client: httpx.Client) -> None:
    cases = _corpus_cases()
    assert len(cases) > 40
    for name in cases:
        resp = client.post(
            f"{BEDROCK_PATH}/converse", json=bedrock_body(), headers={**BEDROCK_H, "x-mock-fixture": name}
        )
        assert resp.status_code == 200, name
        assert resp.content == (DEFAULT_FIXTURE_DIR / name).read_bytes(), name
        if name.endswith(".bin"):
            assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"


def test_fixture_bin_decodes_and_chunks(client: httpx.Client) -> None:
    headers = {**BEDROCK_H, "x-mock-fixture": "bedrock/tool", "x-mock-chunk-bytes": "13"}
    resp = client.post(f"{BEDROCK_PATH}/converse-stream", json=bedrock_body(), headers=headers)
    assert resp.content == (DEFAULT_FIXTURE_DIR / "bedrock/tool.bin").read_bytes()
    assert decode_eventstream(resp.content)[-1].headers[":event-type"] == "metadata"


def test_fixture_missing_or_escaping(client: httpx.Client) -> None:
    for spec in ("anthropic/does-not-exist", "../../etc/passwd"):
        resp = client.post(
            "/v1/messages", json=anthropic_body(), headers={**ANTHROPIC_H, "x-mock-fixture": spec}
        )
        assert resp.status_code == 404
        _anthropic_shape(resp)


# --- introspection ------------------------------------------------------------------------------------


def test_recording_endpoint(client: httpx.Client) -> None:
    assert client.delete("/__mock/requests").status_code == 200
    client.post(
        "/v1beta/models/m1:generateContent?key=abc", json=gemini_body("recorded"), headers={"X-Custom": "v1"}
    )
    (entry,) = client.get("/__mock/requests").json()
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1beta/models/m1:generateContent?key=abc"
    assert entry["headers"]["X-Custom"] == "v1"
    assert orjson.loads(entry["body"]) == gemini_body("recorded")
    cleared = client.delete("/__mock/requests").json()
    assert cleared == {"cleared": 1}
    assert client.get("/__mock/requests").json() == []


def test_recording_is_bounded(client: httpx.Client) -> None:
    client.delete("/__mock/requests")
    for i in range(205):
        client.get(f"/v1/models?i={i}", headers=OPENAI_H)
    entries = client.get("/__mock/requests").json()
    assert len(entries) == 200
    assert entries[0]["path"] == "/v1/models?i=5"
    assert entries[-1]["path"] == "/v1/models?i=204"


def test_health(client: httpx.Client) -> None:
    resp = client.get("/__mock/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


# --- pure units ---------------------------------------------------------------------------------------


def test_eventstream_encoder_roundtrip_with_botocore() -> None:
    headers = {
        ":message-type": "event",
        "flag": True,
        "off": False,
        "n": 7,
        "big": 2**40,
        "blob": b"\x00\x01",
    }
    frame = eventstream.encode_message(headers, b'{"x":1}')
    (message,) = decode_eventstream(frame)  # botocore validates both CRCs
    assert message.headers == headers
    assert message.payload == b'{"x":1}'
    exc = decode_eventstream(eventstream.exception_message("validationException", b"{}"))[0]
    assert exc.headers[":message-type"] == "exception"
    assert exc.headers[":exception-type"] == "validationException"
    err = decode_eventstream(eventstream.error_message("InternalFailure", "boom"))[0]
    assert err.headers == {
        ":message-type": "error",
        ":error-code": "InternalFailure",
        ":error-message": "boom",
    }
    corrupted = bytearray(frame)
    corrupted[-6] ^= 0xFF
    with pytest.raises(ChecksumMismatch):
        decode_eventstream(bytes(corrupted))


def test_value_from_schema_variants() -> None:
    assert value_from_schema(WEATHER_TOOL_SCHEMA) == WEATHER_ARGS
    assert value_from_schema({"anyOf": [{"type": "null"}, {"type": "integer"}]}) == 1
    assert value_from_schema({"type": ["null", "boolean"]}) is True
    assert value_from_schema({"const": "x"}) == "x"
    assert value_from_schema({"type": "ARRAY", "items": {"type": "NUMBER"}}) == [1]


def test_text_pieces_rejoin_exactly() -> None:
    text = "Hello  from mock\tanthropic (m): a b c d e"
    assert "".join(text_pieces(text)) == text
    assert len(text_pieces(text)) > 1


def test_plan_reply_min_tokens() -> None:
    reply = plan_reply(Conversation(model="m", tools=[Tool("t", {})], last_is_user=True), "x", "r1", "c")
    assert reply.tool_calls[0].args == {}
    assert reply.input_tokens == 1 and reply.output_tokens >= 1


def test_match_route_decodes_model_ids() -> None:
    assert match_route(
        "POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse"
    ) == (
        "bedrock",
        "converse",
        {"model": "arn:aws:bedrock:us-east-1:1:inference-profile/x", "action": "converse"},
    )
    assert match_route("GET", "/v1/chat/completions") is None


def test_main_entry_point_serves() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = f"from extproc.mock.server import main; main(['--port', '{port}', '--name', 'cli'])"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/__mock/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "mock server did not start"
                time.sleep(0.1)
        assert resp.json() == {"status": "ok", "name": "cli"}
    finally:
        proc.terminate()
        proc.wait(10)


# --- real client SDKs parse the mock's wire formats ---------------------------------------------------


def test_openai_sdk_roundtrip(client: httpx.Client) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="sk-test", max_retries=0)
    done = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "sdk"}])
    assert done.choices[0].message.content == "Hello from mock openai (gpt-4o): sdk"
    stream = sdk.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "sdk"}],
        tools=openai_tools("get_weather"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert orjson.loads(args) == WEATHER_ARGS
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "429"},
        )


def test_anthropic_sdk_roundtrip(client: httpx.Client) -> None:
    anthropic = pytest.importorskip("anthropic")
    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="sk-ant", max_retries=0)
    with sdk.messages.stream(
        model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "sdk"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock anthropic (claude-x): sdk"
    assert final.usage.output_tokens == 6
    with pytest.raises(anthropic.InternalServerError) as info:
        sdk.messages.create(
            model="claude-x",
            max_tokens=64,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "529"},
        )
    assert info.value.status_code == 529


def test_botocore_client_roundtrip(client: httpx.Client) -> None:
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError, EventStreamError

    bedrock = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=str(client.base_url),
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )
    messages = [{"role": "user", "content": [{"text": "boto"}]}]
    done = bedrock.converse(modelId=BEDROCK_MODEL, messages=messages)
    assert (
        done["output"]["message"]["content"][0]["text"] == f"Hello from mock bedrock ({BEDROCK_MODEL}): boto"
    )
    events = list(bedrock.converse_stream(modelId=BEDROCK_MODEL, messages=messages)["stream"])
    assert list(events[0]) == ["messageStart"]
    assert list(events[-1]) == ["metadata"]

    def add_header(name: str, value: str) -> None:
        bedrock.meta.events.register_first(
            "before-sign.bedrock-runtime.*", lambda request, **_: request.headers.__setitem__(name, value)
        )

    add_header("x-mock-stream-error-after", "2")
    with pytest.raises(EventStreamError, match="throttlingException"):
        list(bedrock.converse_stream(modelId=BEDROCK_MODEL, messages=messages)["stream"])
    add_header("x-mock-status", "429")
    with pytest.raises(ClientError) as info:
        bedrock.converse(modelId=BEDROCK_MODEL, messages=messages)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"


def test_vertex_anthropic_auth_error_is_google_shaped(client: httpx.Client) -> None:
    path = f"{VERTEX_BASE}/anthropic/models/claude-x:rawPredict"
    payload = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = client.post(path, json=payload)
    assert resp.status_code == 401
    assert resp.json()["error"]["status"] == "UNAUTHENTICATED"
    throttled = client.post(path, json=payload, headers={**VERTEX_H, "x-mock-status": "429"})
    assert throttled.json()["error"]["type"] == "rate_limit_error"


def test_unknown_models_get_each_providers_not_found(client: httpx.Client) -> None:
    oa = client.post("/v1/chat/completions", json=openai_body(model="unknown-x"), headers=OPENAI_H)
    assert oa.status_code == 404 and oa.json()["error"]["code"] == "model_not_found"
    an = client.post("/v1/messages", json=anthropic_body(model="unknown-x"), headers=ANTHROPIC_H)
    assert an.status_code == 404 and an.json()["error"]["type"] == "not_found_error"
    ge = client.post("/v1beta/models/unknown-x:generateContent", json={"contents": []}, headers=GEMINI_H)
    assert ge.status_code == 404 and ge.json()["error"]["status"] == "NOT_FOUND"
    br = client.post("/model/unknown-x/converse", json=bedrock_body(), headers=BEDROCK_H)
    assert br.status_code == 400 and br.headers["x-amzn-errortype"].startswith("ValidationException")
    ok = client.post("/v1/chat/completions", json=openai_body(model="known-model"), headers=OPENAI_H)
    assert ok.status_code == 200
