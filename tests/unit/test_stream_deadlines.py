"""A stream's deadlines in the router phase, driven message by message as Envoy would (no Envoy).

The e2e tests (tests/e2e/test_streams.py) show the same through the real Envoy; here the replies
themselves: what the sidecar sends unasked when a deadline passes, and the route timeout a stream
gets.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
import yaml

from extproc import gateway, usage_log
from extproc.config.loader import parse_text
from extproc.headers import UPSTREAM_TIMEOUT
from extproc.pipeline.stream_errors import has_ending, stream_error
from extproc.server import ExternalProcessor
from tests.unit.test_processors import (
    ANTHROPIC,
    CHAT,
    OPENAI,
    Conversation,
    body_msg,
    provider_headers,
    route,
    set_headers,
)

ROUTE_IDS: dict[str, str] = {}


@pytest.fixture(scope="module")
def gw() -> gateway.Gateway:
    routes = [
        route("openai", [OPENAI]),
        route("anthropic", [ANTHROPIC]),
        route("short", [OPENAI], timeout={"streamIdleTimeout": "100ms", "streamMaxDuration": "150ms"}),
    ]
    limits = {"requestTimeout": "200ms", "streamIdleTimeout": "200ms", "streamMaxDuration": "2s"}
    config = {"config": {"limits": limits}, "binds": [{"port": 3000, "listeners": [{"routes": routes}]}]}
    built = gateway.build(parse_text(yaml.safe_dump(config)).config)
    ROUTE_IDS.update({r.name: r.id for r in built.routes})
    return built


def start(path: str, name: str) -> Any:
    from tests.unit.test_processors import headers_msg

    return headers_msg(
        {":method": "POST", ":path": path, "content-type": "application/json"},
        attrs={"xds.route_name": ROUTE_IDS[name]},
    )


async def next_reply(conv: Conversation, within: float) -> Any:
    """What the sidecar sends next without being sent anything."""
    return await asyncio.wait_for(conv.replies.__anext__(), within)


def records(out: io.BytesIO) -> list[dict]:
    usage_log.stop()  # the writer thread writes what is queued first
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith(b"{")]


def test_a_stream_gets_its_maximum_as_route_timeout_and_a_whole_answer_keeps_the_routes(
    gw: gateway.Gateway,
) -> None:
    async def go(stream: bool) -> dict[str, str]:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(start("/openai/v1/chat/completions", "openai"))
        r = await conv.send(body_msg(json.dumps({**CHAT, "stream": stream}).encode()))
        await conv.end()
        return set_headers(r.request_body.response)

    # streamMaxDuration (2 s) plus a sidecar timeout (5 s): Envoy's backstop, the sidecar ends it first.
    assert asyncio.run(go(True))[UPSTREAM_TIMEOUT] == "7000"
    assert UPSTREAM_TIMEOUT not in asyncio.run(go(False))


@pytest.mark.parametrize(
    ("path", "name"), [("/openai/v1/chat/completions", "openai"), ("/openai/v1/messages", "openai")]
)
def test_a_silent_stream_is_ended_with_an_error_event_in_the_clients_format(
    gw: gateway.Gateway, path: str, name: str
) -> None:
    out = io.BytesIO()
    usage_log.start(out)

    async def go() -> tuple[Any, float]:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(start(path, name))
        body = {**CHAT, "stream": True} if "chat" in path else {**CHAT, "stream": True, "max_tokens": 9}
        await conv.send(body_msg(json.dumps(body).encode()))
        await conv.send(provider_headers({":status": "200", "content-type": "text/event-stream"}))
        first = b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n'
        await conv.send(body_msg(first, end=False, kind="response_body"))
        started = time.monotonic()
        r = await next_reply(conv, 2)
        took = time.monotonic() - started
        await conv.end()
        return r, took

    r, took = asyncio.run(go())
    assert 0.15 < took < 1.0
    streamed = r.response_body.response.body_mutation.streamed_response
    assert streamed.end_of_stream
    if "chat" in path:
        error = json.loads(streamed.body.split(b"\n\n")[0].removeprefix(b"data: "))["error"]
        assert error["code"] == "stream_idle_timeout" and "0.2s" in error["message"]
        assert streamed.body.endswith(b"data: [DONE]\n\n")
    else:  # an OpenAI provider's stream, translated for a Messages client
        assert streamed.body.startswith(b"event: error\n")
        assert json.loads(streamed.body.split(b"data: ", 1)[1])["error"]["type"] == "timeout_error"
    (record,) = records(out)
    assert record["outcome"] == "stream_cut" and "nothing for 0.2s" in record["error"]


def test_a_routes_policy_sets_its_stream_maximum(gw: gateway.Gateway) -> None:
    async def go() -> Any:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(start("/short/v1/chat/completions", "short"))
        await conv.send(body_msg(json.dumps({**CHAT, "stream": True}).encode()))
        await conv.send(provider_headers({":status": "200", "content-type": "text/event-stream"}))
        chunk = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # a chunk every 50 ms: never idle for 100 ms
            # The reply is the chunk's, or what the sidecar sent unasked in the meantime.
            r = await conv.send(body_msg(chunk, end=False, kind="response_body"))
            if r.response_body.response.body_mutation.streamed_response.end_of_stream:
                return r
            await asyncio.sleep(0.05)
        raise AssertionError("the stream was never ended")

    r = asyncio.run(go())
    body = r.response_body.response.body_mutation.streamed_response.body
    assert b'"code":"stream_max_duration"' in body and b"0.15s" in body


def test_a_stream_whose_last_event_went_out_is_ended_without_an_error(gw: gateway.Gateway) -> None:
    """A provider that sent [DONE] but keeps its connection open: the client has it all."""
    out = io.BytesIO()
    usage_log.start(out)

    async def go() -> Any:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(start("/openai/v1/chat/completions", "openai"))
        await conv.send(body_msg(json.dumps({**CHAT, "stream": True}).encode()))
        await conv.send(provider_headers({":status": "200", "content-type": "text/event-stream"}))
        done = (
            b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        )
        await conv.send(body_msg(done, end=False, kind="response_body"))
        r = await next_reply(conv, 2)
        await conv.end()
        return r

    streamed = asyncio.run(go()).response_body.response.body_mutation.streamed_response
    assert streamed.end_of_stream and streamed.body == b""
    assert records(out)[0]["outcome"] == "ok"


def test_a_stream_whose_provider_never_answers_is_a_504_in_the_clients_shape(gw: gateway.Gateway) -> None:
    async def go() -> Any:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(start("/anthropic/v1/messages", "anthropic"))
        await conv.send(
            body_msg(json.dumps({**CHAT, "model": "claude-x", "max_tokens": 9, "stream": True}).encode())
        )
        r = await next_reply(conv, 2)
        await conv.end()
        return r

    imm = asyncio.run(go()).immediate_response
    assert imm.status.code == 504
    assert json.loads(imm.body) == {
        "type": "error",
        "error": {"type": "timeout_error", "message": "the provider did not answer in time"},
    }


def test_a_whole_answer_has_no_deadline_of_the_sidecars(gw: gateway.Gateway) -> None:
    """Envoy's route timeout bounds it; the sidecar waits for Envoy's next message."""

    async def go() -> None:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(start("/openai/v1/chat/completions", "openai"))
        await conv.send(body_msg(json.dumps(CHAT).encode()))
        with pytest.raises(TimeoutError):
            await next_reply(conv, 0.4)
        await conv.end()

    asyncio.run(go())


def test_stream_error_events() -> None:
    chat = stream_error("completions", "stalled", "stream_idle_timeout")
    first, done, rest = chat.split(b"\n\n")
    assert json.loads(first.removeprefix(b"data: ")) == {
        "error": {"message": "stalled", "type": "server_error", "param": None, "code": "stream_idle_timeout"}
    }
    assert (done, rest) == (b"data: [DONE]", b"")
    messages = stream_error("messages", "stalled", "stream_idle_timeout", "timeout_error")
    assert messages == (
        b'event: error\ndata: {"type":"error","error":{"type":"timeout_error","message":"stalled"}}\n\n'
    )
    assert has_ending("completions", chat) and has_ending("messages", messages)
    assert not has_ending("completions", first) and not has_ending("messages", b"event: ping\ndata: {}\n\n")
