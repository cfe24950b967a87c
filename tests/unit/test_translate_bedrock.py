"""Bedrock translation cases the conformance corpus does not cover."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import pytest

from extproc.translate import bedrock
from extproc.translate.base import TranslationError
from extproc.translate.usage import Usage

from .conformance_util import every_byte, feed, frames, stream_view


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


# ---------------------------------------------------------------- request


@pytest.mark.parametrize("n", [2, 5])
def test_n_above_one_is_rejected(n: int) -> None:
    with pytest.raises(TranslationError) as err:
        bedrock.chat_request(_req(n=n), "anthropic.claude")
    assert err.value.param == "n"


def test_body_has_no_model_and_maps_inference_config() -> None:
    body = bedrock.chat_request(_req(max_tokens=5, temperature=0.1, top_p=0.5, stop="END"), "model-id")
    assert "model" not in body
    assert body["inferenceConfig"] == {
        "maxTokens": 5,
        "temperature": 0.1,
        "topP": 0.5,
        "stopSequences": ["END"],
    }


def test_images() -> None:
    def user(url: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}

    body = bedrock.chat_request(user("data:image/jpg;base64,AAAA"), "m")
    assert body["messages"][0]["content"] == [{"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}}]
    body = bedrock.chat_request(user("s3://bucket/cat.png"), "m")
    assert body["messages"][0]["content"][0]["image"]["source"] == {
        "s3Location": {"uri": "s3://bucket/cat.png"}
    }
    with pytest.raises(TranslationError):
        bedrock.chat_request(user("https://example.com/cat.png"), "m")


TOOLS = [
    {"type": "function", "function": {"name": "w", "description": "d", "parameters": {"type": "object"}}}
]
HISTORY = [
    {"role": "user", "content": "q"},
    {
        "role": "assistant",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "t1", "content": "r"},
]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "w"}}, {"tool": {"name": "w"}}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    config = bedrock.chat_request(_req(tools=TOOLS, tool_choice=choice), "m")["toolConfig"]
    assert config["toolChoice"] == expected
    assert config["tools"] == [
        {"toolSpec": {"name": "w", "description": "d", "inputSchema": {"json": {"type": "object"}}}}
    ]


def test_tool_choice_none_offers_no_tools_but_keeps_history_valid() -> None:
    assert "toolConfig" not in bedrock.chat_request(_req(tools=TOOLS, tool_choice="none"), "m")
    body = bedrock.chat_request({"messages": HISTORY, "tools": TOOLS, "tool_choice": "none"}, "m")
    assert body["toolConfig"] == {"tools": [bedrock.PLACEHOLDER_TOOL]}


def test_json_schema_output_config() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}
    body = bedrock.chat_request(_req(response_format=fmt), "m")
    definition = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert definition == {"schema": '{"type":"object"}', "name": "p"}


# ---------------------------------------------------------------- response


def test_cache_tokens_count_as_prompt_tokens() -> None:
    resp = {
        "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
        "stopReason": "guardrail_intervened",
        "usage": {"inputTokens": 1, "outputTokens": 2, "cacheReadInputTokens": 3, "cacheWriteInputTokens": 4},
    }
    out = bedrock.chat_response(resp, "model-id", created=9)
    assert out["model"] == "model-id" and out["created"] == 9
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 4},
    }


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "header", "code", "type_"),
    [
        (429, b'{"message":"Too many requests"}', None, "ThrottlingException", "rate_limit_error"),
        (
            400,
            b'{"message":"bad","__type":"ValidationException"}',
            None,
            "ValidationException",
            "invalid_request_error",
        ),
        (
            403,
            b'{"Message":"denied"}',
            "AccessDeniedException:http://internal.amazon.com/coral/",
            "AccessDeniedException",
            "permission_error",
        ),
        (503, b"<html>oops</html>", None, "ServiceUnavailableException", "service_unavailable"),
    ],
)
def test_error_response(status: int, body: bytes, header: str | None, code: str, type_: str) -> None:
    got_status, err = bedrock.error_response(status, body, header)
    assert got_status == status
    assert err["error"]["code"] == code and err["error"]["type"] == type_
    assert err["error"]["message"] in ("Too many requests", "bad", "denied", "<html>oops</html>")


# ---------------------------------------------------------------- stream


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def _message(headers: dict[str, str], payload: dict[str, Any] | bytes) -> bytes:
    """One AWS event-stream message (test-only encoder; decoding is botocore's)."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    total = 16 + len(head) + len(body)
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + body
    return message + struct.pack(">I", zlib.crc32(message))


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return _message(headers, {**payload, "p": "abcdef"})


START = _event("messageStart", {"role": "assistant"})
TEXT = _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
TOOL = _event(
    "contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}
)
TOOL_STOP = _event("contentBlockStop", {"contentBlockIndex": 1})
STOP = _event("messageStop", {"stopReason": "tool_use"})
META = _event("metadata", {"usage": {"inputTokens": 4, "outputTokens": 2, "cacheReadInputTokens": 1}})


def test_stream_tool_without_input_gets_empty_object() -> None:
    data = START + TEXT + TOOL + TOOL_STOP + STOP + META
    stream = bedrock.ChatStream("model-id", include_usage=True)
    out = feed(stream, data)
    view = stream_view(out.decode())
    assert view["choices"][0]["tool_calls"] == [{"id": "t", "name": "f", "arguments": {}}]
    assert view["choices"][0]["finish_reason"] == "tool_calls"
    assert view["usage"] == {
        "prompt": 5,
        "completion": 2,
        "total": 7,
        "cached": 1,
        "cache_write": 0,
        "reasoning": 0,
    }
    assert stream.usage == Usage(input_tokens=5, output_tokens=2, cache_read_tokens=1)
    assert stream.response_model is None  # Bedrock's events name no model
    assert frames(feed(bedrock.ChatStream("model-id", True), data, every_byte(data))) == frames(out)


def test_stream_exception_event() -> None:
    exc = _message(
        {
            ":message-type": "exception",
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
        },
        {"message": "Too many tokens"},
    )
    data = START + TEXT + exc + TEXT
    for cuts in ([], every_byte(data)):
        view = stream_view(feed(bedrock.ChatStream("m", True), data, cuts).decode())
        assert view["choices"][0]["content"] == "Hi"
        assert view["errors"] == [
            {
                "message": "Too many tokens",
                "type": "rate_limit_error",
                "param": None,
                "code": "ThrottlingException",
            }
        ]
        assert view["done"] and view["events_after_done"] == 0


def test_stream_corrupt_frame_and_truncation() -> None:
    corrupt = bytearray(TEXT)
    corrupt[-1] ^= 0xFF
    view = stream_view(feed(bedrock.ChatStream("m", True), START + bytes(corrupt)).decode())
    assert view["errors"][0]["code"] == "bad_event_stream"
    assert view["done"]
    view = stream_view(feed(bedrock.ChatStream("m", True), START + TEXT[:-3]).decode())
    assert view["errors"][0]["code"] == "stream_truncated"
    assert view["done"] and view["events_after_done"] == 0


def test_stream_without_metadata_still_ends() -> None:
    out = feed(bedrock.ChatStream("m", True), START + TEXT + STOP)
    view = stream_view(out.decode())
    assert view["errors"] == [] and view["done"]
    assert view["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("headers", "payload", "code", "message"),
    [
        ({":message-type": "exception", ":exception-type": "modelStreamErrorException"}, b"not json",
         "ModelStreamErrorException", "ModelStreamErrorException"),
        ({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "broke"}, b"",
         "InternalFailure", "broke"),
    ],
)  # fmt: skip
def test_stream_error_without_json_payload(
    headers: dict[str, str], payload: bytes, code: str, message: str
) -> None:
    view = stream_view(feed(bedrock.ChatStream("m", True), START + _message(headers, payload)).decode())
    assert view["errors"] == [{"message": message, "type": "server_error", "param": None, "code": code}]
    assert view["done"] and view["events_after_done"] == 0
