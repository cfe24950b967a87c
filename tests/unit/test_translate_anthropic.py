"""Anthropic translation cases the conformance corpus does not cover."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.translate import anthropic
from extproc.translate.base import TranslationError
from extproc.translate.usage import Usage

from .conformance_util import every_byte, feed, frames, stream_view


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


# ---------------------------------------------------------------- request


@pytest.mark.parametrize("n", [2, 3])
def test_n_above_one_is_rejected(n: int) -> None:
    with pytest.raises(TranslationError) as err:
        anthropic.chat_request(_req(n=n), "claude")
    assert err.value.param == "n"


def test_defaults_and_limits() -> None:
    assert anthropic.chat_request(_req(n=1), "claude")["max_tokens"] == 4096
    body = anthropic.chat_request(_req(max_tokens=10, max_completion_tokens=20, stream=True, stop="END"), "c")
    assert body["max_tokens"] == 20
    assert body["stream"] is True
    assert body["stop_sequences"] == ["END"]
    assert body["model"] == "c"


def test_system_and_developer_messages() -> None:
    msgs = [
        {"role": "system", "content": "a"},
        {"role": "developer", "content": [{"type": "text", "text": "b"}]},
        {"role": "user", "content": "hi"},
    ]
    body = anthropic.chat_request({"messages": msgs}, "c")
    assert body["system"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_tool_results_merge_into_one_user_turn() -> None:
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "checking",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "w", "arguments": '{"c":1}'}},
                {"id": "b", "type": "function", "function": {"name": "w", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "sun"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks"},
    ]
    body = anthropic.chat_request({"messages": msgs}, "c")
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "a", "name": "w", "input": {"c": 1}},
        {"type": "tool_use", "id": "b", "name": "w", "input": {}},
    ]
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "sun"},
            {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "rain"}]},
            {"type": "text", "text": "thanks"},
        ],
    }
    assert len(body["messages"]) == 3


def test_bad_tool_arguments_are_rejected() -> None:
    call = {"id": "a", "type": "function", "function": {"name": "w", "arguments": "{not json"}}
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]
    with pytest.raises(TranslationError):
        anthropic.chat_request({"messages": msgs}, "c")


TOOLS = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "w"}}, None, {"type": "tool", "name": "w"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    req = _req(tools=TOOLS)
    if choice is not None:
        req["tool_choice"] = choice
    if parallel is not None:
        req["parallel_tool_calls"] = parallel
    body = anthropic.chat_request(req, "c")
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"name": "w", "input_schema": {"type": "object"}}]


def test_unsupported_tool_type_and_part() -> None:
    with pytest.raises(TranslationError) as err:
        anthropic.chat_request(_req(tools=[{"type": "web_search"}]), "c")
    assert err.value.param == "tools"
    audio = {
        "role": "user",
        "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
    }
    with pytest.raises(TranslationError):
        anthropic.chat_request({"messages": [audio]}, "c")


def test_reasoning_budget_is_capped_below_max_tokens() -> None:
    body = anthropic.chat_request(_req(reasoning_effort="high", max_tokens=8000), "c")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "thinking" not in anthropic.chat_request(_req(reasoning_effort="none"), "c")
    with pytest.raises(TranslationError):
        anthropic.chat_request(_req(reasoning_effort="low", max_tokens=1000), "c")
    with pytest.raises(TranslationError):
        anthropic.chat_request(_req(reasoning_effort="extreme"), "c")


def test_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = anthropic.chat_request(_req(response_format=fmt), "c")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_vertex_body_has_version_not_model() -> None:
    body = anthropic.vertex_chat_request(_req(), "claude")
    assert "model" not in body
    assert body["anthropic_version"] == "vertex-2023-10-16"


def test_signed_reasoning_is_replayed_as_thinking() -> None:
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "4", "reasoning_content": "2+2", "reasoning_signature": "S"},
        {"role": "assistant", "content": "x", "reasoning_content": "unsigned"},
    ]
    body = anthropic.chat_request({"messages": msgs}, "c")
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "2+2", "signature": "S"},
        {"type": "text", "text": "4"},
        {"type": "text", "text": "x"},
    ]


# ---------------------------------------------------------------- response


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_finish_reasons(stop_reason: str, finish: str) -> None:
    resp = {"id": "msg", "content": [], "stop_reason": stop_reason, "usage": {"input_tokens": 1}}
    out = anthropic.chat_response(resp, "m", created=42)
    assert out["choices"][0]["finish_reason"] == finish
    assert out["created"] == 42
    assert out["model"] == "m"
    assert out["choices"][0]["message"]["content"] == ""


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": "overloaded_error"},
        ),
        (
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
            {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_error"},
        ),
        (
            502,
            b"<html>Bad Gateway</html>",
            {"message": "<html>Bad Gateway</html>", "type": "server_error", "param": None, "code": None},
        ),
        (
            500,
            b"",
            {"message": "upstream returned HTTP 500", "type": "server_error", "param": None, "code": None},
        ),
    ],
)
def test_error_response(status: int, body: bytes, expected: dict[str, Any]) -> None:
    assert anthropic.error_response(status, body) == (status, {"error": expected})


# ---------------------------------------------------------------- stream


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events
    )


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "model": "claude-x",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5},
    },
}
TEXT_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
TEXT = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
STOP = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}
END = {"type": "message_stop"}


def test_stream_mid_stream_error() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = _sse(START, TEXT_START, TEXT, err) + _sse(TEXT)
    for cuts in ([], every_byte(data)):
        stream = anthropic.ChatStream("m", include_usage=True)
        view = stream_view(feed(stream, data, cuts).decode())
        assert view["choices"][0]["content"] == "Hello"
        assert view["errors"] == [
            {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": "overloaded_error"}
        ]
        assert view["done"] and view["events_after_done"] == 0


def test_stream_truncated_ends_well_formed() -> None:
    stream = anthropic.ChatStream("m", include_usage=True)
    view = stream_view(feed(stream, _sse(START, TEXT_START, TEXT)[:-5]).decode())
    assert view["done"] and view["events_after_done"] == 0
    assert view["errors"][0]["code"] == "stream_truncated"


def test_stream_is_incremental() -> None:
    stream = anthropic.ChatStream("m", include_usage=True)
    out = stream.feed(_sse(START, TEXT_START, TEXT))
    assert stream_view(out.decode())["choices"][0]["content"] == "Hello"
    assert stream.response_model == "claude-x"


def test_stream_usage_without_include_usage() -> None:
    stream = anthropic.ChatStream("m", include_usage=False)
    out = feed(stream, _sse(START, TEXT_START, TEXT, STOP, END))
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    # Usage counts all input: the 10 uncached input tokens plus the 5 read from the cache.
    assert stream.usage == Usage(input_tokens=15, output_tokens=7, cache_read_tokens=5)


def test_stream_every_split_and_done_once() -> None:
    data = _sse(START, TEXT_START, TEXT, STOP, END)
    whole = feed(anthropic.ChatStream("m", True), data)
    assert frames(feed(anthropic.ChatStream("m", True), data, every_byte(data))) == frames(whole)
    assert whole.count(b"[DONE]") == 1
    assert stream_view(whole.decode())["choices"][0]["finish_reason"] == "stop"
