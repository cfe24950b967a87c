"""Gemini translation cases the conformance corpus does not cover."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.translate import gemini
from extproc.translate.base import TranslationError

from .conformance_util import every_byte, feed, frames, stream_view


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


# ---------------------------------------------------------------- request


def test_generation_config_and_system() -> None:
    msgs = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
    body = gemini.chat_request({"messages": msgs, "n": 2, "max_completion_tokens": 50, "stop": "X"}, "g")
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["generationConfig"] == {"candidateCount": 2, "maxOutputTokens": 50, "stopSequences": ["X"]}
    assert "model" not in body
    assert "generationConfig" not in gemini.chat_request(_req(), "g")


TOOLS = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "w"}}, {"mode": "ANY", "allowedFunctionNames": ["w"]}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    body = gemini.chat_request(_req(tools=TOOLS, tool_choice=choice), "g")
    assert body["toolConfig"] == {"functionCallingConfig": expected}
    # An object schema without properties is rejected by Gemini: declare no parameters.
    assert body["tools"] == [{"functionDeclarations": [{"name": "w"}]}]


def test_function_response_needs_a_name() -> None:
    msgs = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "unknown", "content": "r"}]
    with pytest.raises(TranslationError):
        gemini.chat_request({"messages": msgs}, "g")
    msgs[1]["name"] = "w"
    body = gemini.chat_request({"messages": msgs}, "g")
    assert body["contents"][0]["parts"][1] == {
        "functionResponse": {"name": "w", "response": {"content": "r"}}
    }


def test_schema_is_cleaned_for_gemini() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"const": "x"},
            "c": {"type": "array", "items": {"$ref": "#/definitions/C"}},
        },
        "definitions": {"C": {"type": "integer", "minimum": 0}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}
    gen = gemini.chat_request(_req(response_format=fmt), "g")["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert gen["responseSchema"] == {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "b": {"enum": ["x"]},
            "c": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
    }


def test_recursive_schema_is_rejected() -> None:
    schema = {
        "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
        "$ref": "#/$defs/N",
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    with pytest.raises(TranslationError) as err:
        gemini.chat_request(_req(response_format=fmt), "g")
    assert err.value.param == "response_format"


def test_reasoning_none_and_image_urls() -> None:
    body = gemini.chat_request(_req(reasoning_effort="none"), "g")
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    part = {"type": "image_url", "image_url": {"url": "https://x.test/a/photo.webp?sig=1"}}
    body = gemini.chat_request({"messages": [{"role": "user", "content": [part]}]}, "g")
    assert body["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/a/photo.webp?sig=1"}}
    ]


# ---------------------------------------------------------------- response


def test_multiple_candidates_and_finish_reasons() -> None:
    resp = {
        "candidates": [
            {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"},
            {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "SAFETY"},
            {
                "index": 2,
                "content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]},
                "finishReason": "STOP",
            },
        ],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "cachedContentTokenCount": 2},
    }
    out = gemini.chat_response(resp, "g", created=7)
    assert [ch["finish_reason"] for ch in out["choices"]] == ["length", "content_filter", "tool_calls"]
    call = out["choices"][2]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"] == {"name": "f", "arguments": "{}"}
    assert out["model"] == "g" and out["created"] == 7
    assert out["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 3,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (
            429,
            b'{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}',
            "RESOURCE_EXHAUSTED",
            "quota",
        ),
        (
            400,
            b'[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]',
            "INVALID_ARGUMENT",
            "bad",
        ),
        (503, b"upstream connect error", None, "upstream connect error"),
    ],
)
def test_error_response(status: int, body: bytes, code: str | None, message: str) -> None:
    got_status, err = gemini.error_response(status, body)
    assert got_status == status
    assert err["error"]["code"] == code and err["error"]["message"] == message
    assert err["error"]["type"] == {429: "rate_limit_error", 400: "invalid_request_error"}.get(
        status, "service_unavailable"
    )


# ---------------------------------------------------------------- stream


def _sse(*events: dict[str, Any], newline: bytes = b"\r\n") -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + newline + newline for e in events)


CHUNKS = [
    {
        "responseId": "r1",
        "modelVersion": "gemini-x",
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Let me", "thought": True}]}}],
        "usageMetadata": {"promptTokenCount": 3},
    },
    {"candidates": [{"content": {"parts": [{"text": "Hello"}]}}]},
    {
        "candidates": [{"content": {"parts": [{"text": " there"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 1},
    },
]


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_stream_text_reasoning_usage(newline: bytes) -> None:
    data = _sse(*CHUNKS, newline=newline)
    stream = gemini.ChatStream("g", include_usage=True)
    out = feed(stream, data)
    view = stream_view(out.decode())
    assert view["choices"] == [
        {
            "index": 0,
            "role": "assistant",
            "content": "Hello there",
            "reasoning": "Let me",
            "tool_calls": [],
            "finish_reason": "stop",
        }
    ]
    assert view["usage"] == {
        "prompt": 3,
        "completion": 3,
        "total": 6,
        "cached": 0,
        "cache_write": 0,
        "reasoning": 1,
    }
    assert view["done"] and view["events_after_done"] == 0
    assert stream.response_model == "gemini-x"
    assert frames(feed(gemini.ChatStream("g", True), data, every_byte(data))) == frames(out)


def test_stream_truncated_without_finish_reason() -> None:
    view = stream_view(feed(gemini.ChatStream("g", True), _sse(*CHUNKS[:2])).decode())
    assert view["choices"][0]["content"] == "Hello"
    assert view["errors"][0]["code"] == "stream_truncated"
    assert view["done"]


def test_stream_error_object() -> None:
    err = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    view = stream_view(feed(gemini.ChatStream("g", True), _sse(CHUNKS[0], err, CHUNKS[1])).decode())
    assert view["errors"] == [
        {"message": "quota", "type": "rate_limit_error", "param": None, "code": "RESOURCE_EXHAUSTED"}
    ]
    assert view["choices"][0]["content"] == ""
    assert view["done"] and view["events_after_done"] == 0


def test_stream_multiple_candidates_and_tool_calls() -> None:
    chunk = {
        "candidates": [
            {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            {
                "index": 1,
                "content": {"parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}]},
                "finishReason": "STOP",
            },
        ]
    }
    view = stream_view(feed(gemini.ChatStream("g", False), _sse(chunk)).decode())
    assert [ch["finish_reason"] for ch in view["choices"]] == ["stop", "tool_calls"]
    assert view["choices"][1]["tool_calls"][0]["arguments"] == {"x": 1}
    assert view["usage"] is None
