"""Server-sent-events framing shared by the stream translators.

``SSEDecoder`` turns bytes split anywhere into whole events. It accepts LF, CRLF
and CR line endings (Gemini uses CRLF, most others LF) and the optional space
after ``data:``. The ``*_frame`` helpers build the OpenAI-style frames we emit.
"""

from __future__ import annotations

from typing import Any

import orjson

from .base import openai_error

DONE = b"data: [DONE]\n\n"


class SSEEvent:
    """One dispatched event: its ``event:`` name (or None) and joined ``data`` bytes."""

    __slots__ = ("data", "event")

    def __init__(self, event: str | None, data: bytes) -> None:
        self.event = event
        self.data = data


class SSEDecoder:
    """Incremental SSE parser; holds at most one partial line between feeds."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A trailing CR may be the first half of CRLF: keep it for the next feed.
            held = buf.endswith(b"\r")
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buf += b"\r"
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of input: dispatch a last event that lacked its blank line (lenient)."""
        events: list[SSEEvent] = []
        rest, self._buf = self._buf.rstrip(b"\r"), b""
        if rest:
            self._line(rest, events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(SSEEvent(self._event, b"\n".join(self._data)))
            self._event = None
            self._data = []
            return
        if line[0] == 0x3A:  # ":" starts a comment line
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


def data_frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_frame(message: str, type_: str, code: str | int | None = None) -> bytes:
    """An OpenAI-style in-stream error; callers follow it with ``DONE``."""
    return data_frame(openai_error(message, type_, code))


def malformed_frames() -> bytes:
    """Ends a stream whose upstream sent an event with fields of the wrong shape."""
    return error_frame("malformed upstream stream event", "server_error", "bad_upstream_event") + DONE
