"""SSE framing: any line ending, any split point."""

from __future__ import annotations

import pytest

from extproc.translate.sse import DONE, SSEDecoder, complete_tail, data_frame, error_frame

from .conformance_util import every_byte


def _decode(data: bytes, cuts: list[int]) -> list[tuple[str | None, bytes]]:
    dec = SSEDecoder()
    events = []
    prev = 0
    for cut in [*cuts, len(data)]:
        events += dec.feed(data[prev:cut])
        prev = cut
    events += dec.flush()
    return [(e.event, e.data) for e in events]


STREAM = b'event: a\ndata: {"x":1}\n\n: comment\ndata:{"y":2}\ndata: z\n\nevent:b\ndata: last\n\n'
EXPECTED = [("a", b'{"x":1}'), (None, b'{"y":2}\nz'), ("b", b"last")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_line_endings_and_every_split(newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    assert _decode(data, []) == EXPECTED
    assert _decode(data, every_byte(data)) == EXPECTED


def test_flush_dispatches_unterminated_last_event() -> None:
    assert _decode(b"data: a\n\ndata: b", []) == [(None, b"a"), (None, b"b")]
    assert _decode(b"data: a\r\n\r\ndata: b\r", []) == [(None, b"a"), (None, b"b")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert _decode(b"\n\n\nevent: ping\n\n", []) == []


def test_frames() -> None:
    assert data_frame({"a": 1}) == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert error_frame("boom", "server_error", "x") == (
        b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":"x"}}\n\n'
    )


@pytest.mark.parametrize(
    ("tail", "kept"),
    [
        (b"data: [DONE]", b"data: [DONE]\n\n"),  # a last event without its blank line: whole
        (b'data: {"a":1}\n', b'data: {"a":1}\n'),
        (b'data: {"a":1', b""),  # the body ended inside the JSON (a cut connection)
        (b"event: content_blo", b""),  # inside the event name, before any data
        (b"event: message_delta\ndata: {", b""),
        (b": ping", b""),  # a comment alone: nothing to dispatch
        (b"", b""),
    ],
)
def test_an_event_the_stream_ends_inside_is_not_passed_on(tail: bytes, kept: bytes) -> None:
    """Passthrough streams' end (README "When a provider cuts a stream"): no half event reaches a
    client before the gateway's error event."""
    assert complete_tail(tail) == kept
