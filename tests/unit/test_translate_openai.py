"""OpenAI passthrough: request model, error normalisation, stream accounting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.translate import openai

from .conformance_util import every_byte, feed, sse_events


def test_chat_request_sets_model_without_mutating() -> None:
    req = {"model": "alias", "messages": [], "stream": True, "stream_options": {"include_obfuscation": False}}
    body = openai.chat_request(req, "gpt-real")
    assert body["model"] == "gpt-real"
    assert body["stream_options"] == {"include_obfuscation": False}  # the client's own options
    assert req == {
        "model": "alias",
        "messages": [],
        "stream": True,
        "stream_options": {"include_obfuscation": False},
    }
    assert "stream_options" not in openai.chat_request({"messages": []}, "m")


def test_chat_response_is_identity() -> None:
    resp = {"id": "x", "choices": []}
    assert openai.chat_response(resp, "m", created=5) is resp


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b'{"error":{"message":"bad","type":"invalid_request_error","param":"messages","code":"x"}}',
            {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "x"},
        ),
        (
            429,
            b'{"error":{"message":"slow"}}',
            {"message": "slow", "type": "rate_limit_error", "param": None, "code": None},
        ),
        (500, b'{"error":"boom"}', {"message": "boom", "type": "server_error", "param": None, "code": None}),
        (
            404,
            b'{"message":"no such model","code":"404"}',
            {"message": "no such model", "type": "not_found_error", "param": None, "code": "404"},
        ),
        (
            502,
            b"<html>bad gateway</html>",
            {"message": "<html>bad gateway</html>", "type": "server_error", "param": None, "code": None},
        ),
        (
            400,
            b'[{"error":{"message":"listed","type":"invalid_request_error"}}]',
            {"message": "listed", "type": "invalid_request_error", "param": None, "code": None},
        ),
    ],
)
def test_error_response(status: int, body: bytes, expected: dict[str, Any]) -> None:
    assert openai.error_response(status, body) == (status, {"error": expected})


def _chunk(choices: list[Any], usage: Any = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": choices,
        "usage": usage,
    }


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
STREAM = (
    b"data: " + json.dumps(_chunk([{"index": 0, "delta": {"content": "Hi"}}])).encode() + b"\n\n"
    b": keep-alive\n\n"
    b"data: " + json.dumps(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])).encode() + b"\n\n"
    b"data: " + json.dumps(_chunk([], USAGE)).encode() + b"\n\n"
    b"data: [DONE]\n\n"
)


def test_stream_passes_bytes_through_and_reads_usage() -> None:
    stream = openai.ChatStream("alias", include_usage=True)
    for i in range(len(STREAM)):
        assert stream.feed(STREAM[i : i + 1]) == STREAM[i : i + 1]
    assert stream.finish() == b""
    assert stream.usage == USAGE
    assert stream.response_model == "gpt-x"


def test_stream_drops_injected_usage_chunk_when_client_did_not_ask() -> None:
    for cuts in ([], every_byte(STREAM)):
        stream = openai.ChatStream("alias", include_usage=False)
        out = feed(stream, STREAM, cuts)
        events = sse_events(out.decode())
        assert events[-1] == "[DONE]"
        assert all(json.loads(e)["choices"] for e in events[:-1])
        assert len(events) == 3
        assert stream.usage == USAGE
