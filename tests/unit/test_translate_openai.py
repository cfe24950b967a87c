"""OpenAI passthrough: request model, error normalisation, stream accounting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.translate import openai
from extproc.translate.usage import Usage

from .conformance_util import every_byte, feed


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


def _chunk(choices: list[Any], usage: Any = None, *, with_usage: bool = True) -> dict[str, Any]:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": choices}
    if with_usage:
        chunk["usage"] = usage  # OpenAI adds "usage": null to every chunk once include_usage is on
    return chunk


def _frame(obj: Any, compact: bool) -> bytes:
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj)
    return b"data: " + text.encode() + b"\n\n"


def _stream(with_usage: bool, compact: bool = True) -> bytes:
    """The same answer as OpenAI streams it with include_usage on, or without it."""
    out = _frame(
        _chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}], with_usage=with_usage), compact
    )
    out += _frame(_chunk([{"index": 0, "delta": {"content": "usage"}}], with_usage=with_usage), compact)
    out += b": keep-alive\r\n\r\n"
    out += _frame(
        _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], with_usage=with_usage), compact
    )
    if with_usage:
        out += _frame(_chunk([], USAGE), compact)
    return out + b"data: [DONE]\n\n"


USAGE = {
    "prompt_tokens": 3,
    "completion_tokens": 2,
    "total_tokens": 5,
    "prompt_tokens_details": {"cached_tokens": 1},
    "completion_tokens_details": {"reasoning_tokens": 1},
}
EXPECTED_USAGE = Usage(input_tokens=3, output_tokens=2, cache_read_tokens=1, reasoning_tokens=1)
STREAM = _stream(with_usage=True, compact=False)


def test_stream_passes_bytes_through_whole_events_and_reads_usage() -> None:
    """The provider's bytes, unchanged, but only ever whole events: the gateway may end the
    client's stream with an event of its own at any point (pipeline/stream_errors.py)."""
    stream = openai.ChatStream("alias", include_usage=True)
    out = b""
    for i in range(len(STREAM)):
        piece = stream.feed(STREAM[i : i + 1])
        assert not piece or piece.endswith((b"\n\n", b"\r\n\r\n")), piece
        out += piece
    assert out == STREAM
    assert stream.finish() == b""
    assert stream.usage == EXPECTED_USAGE
    assert stream.response_model == "gpt-x"


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_stream_without_include_usage_is_the_stream_the_client_would_have_had(compact: bool) -> None:
    """The gateway forces include_usage upstream; a client that did not ask gets the bytes
    it would have had: no usage chunk, no "usage": null members, comments and CRLF kept."""
    forced, unforced = _stream(True, compact), _stream(False, compact)
    for cuts in ([], every_byte(forced)):
        stream = openai.ChatStream("alias", include_usage=False)
        assert feed(stream, forced, cuts) == unforced
        assert stream.usage == EXPECTED_USAGE
        assert stream.response_model == "gpt-x"


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_keeps_an_unfinished_last_event_and_ends_it(include_usage: bool) -> None:
    stream = openai.ChatStream("alias", include_usage=include_usage)
    tail = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}'
    assert feed(stream, _stream(include_usage) + tail) == _stream(include_usage) + tail + b"\n\n"


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_cut_short_ends_with_a_truncation_error_and_done(include_usage: bool) -> None:
    """As the translators end a provider stream that stops early (sse.truncated_frames)."""
    cut = _stream(include_usage).split(b"data: [DONE]")[0]
    cut = cut[: cut.index(b'"finish_reason":"stop"')]  # before the finish reason, mid-event
    cut = cut[: cut.rindex(b"\n\n") + 2]  # the whole events before it
    out = feed(openai.ChatStream("alias", include_usage=include_usage), cut)
    assert out.startswith(cut)
    tail = out[len(cut) :].split(b"\n\n")
    assert json.loads(tail[0].removeprefix(b"data: "))["error"]["code"] == "stream_truncated"
    assert tail[1:] == [b"data: [DONE]", b""]


def test_a_provider_error_event_is_followed_by_done() -> None:
    """Passthrough streams end like translated ones: ``[DONE]`` after an in-band error."""
    error = b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n'
    for include_usage in (True, False):
        got = feed(
            openai.ChatStream("alias", include_usage=include_usage),
            _stream(False).split(b"\n\n")[0] + b"\n\n" + error,
        )
        assert got.endswith(error + b"data: [DONE]\n\n") and got.count(b"[DONE]") == 1


def test_a_finish_reason_without_done_is_complete_enough() -> None:
    """Some compatible servers never send [DONE]: the stream had its finish reason, so no error."""
    body = _stream(False).removesuffix(b"data: [DONE]\n\n")
    assert feed(openai.ChatStream("alias", include_usage=False), body) == body + b"data: [DONE]\n\n"


def test_usage_is_the_latest_total_never_a_sum() -> None:
    # Some compatible servers (vLLM with continuous usage stats) report a running total on
    # every chunk: the last one is the answer's usage.
    running = b"".join(
        _frame(
            _chunk([{"index": 0, "delta": {"content": "a"}}], {"prompt_tokens": 3, "completion_tokens": n}),
            True,
        )
        for n in (1, 2, 3)
    )
    for include_usage in (True, False):
        stream = openai.ChatStream("alias", include_usage=include_usage)
        feed(stream, running + b"data: [DONE]\n\n")
        assert stream.usage == Usage(input_tokens=3, output_tokens=3)


def test_stream_model_is_none_until_a_chunk_names_it() -> None:
    stream = openai.ChatStream("alias", include_usage=True)
    stream.feed(b'data: {"id":"c","model":"","choices":[],"prompt_filter_results":[]}\n\n')
    assert stream.response_model is None and stream.usage is None  # Azure's first chunk has no model
    stream.feed(_frame(_chunk([{"index": 0, "delta": {"content": "a"}}]), True))
    assert stream.response_model == "gpt-x"


def test_ask_usage() -> None:
    req = {"model": "m", "stream": True, "stream_options": {"include_obfuscation": False}}
    body = openai.ask_usage(req)
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert req["stream_options"] == {"include_obfuscation": False}
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert openai.ask_usage(asked) is asked
    unstreamed = {"model": "m"}
    assert openai.ask_usage(unstreamed) is unstreamed
