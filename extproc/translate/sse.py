"""Server-sent-events framing shared by the stream translators.

``SSEDecoder`` turns bytes split anywhere into whole events. It accepts LF, CRLF
and CR line endings (Gemini uses CRLF, most others LF) and the optional space
after ``data:``. ``SSETranslator`` is the feed/finish skeleton of a translator reading
provider SSE, ``JSONEventTranslator`` the one for JSON-object events turned into OpenAI
chunks. The ``*_frame(s)`` helpers build the OpenAI-style frames we emit.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

import orjson

from .base import Json, openai_error

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


_LINE_END = re.compile(rb"\r\n|\r|\n")


class RawEvents:
    """Splits bytes, cut anywhere, into whole SSE events *as the bytes that carried them*.

    For streams passed on unchanged but for whole events left out: each event keeps
    its own line endings, comments and spacing, so what is kept is byte-identical.
    An event is everything up to and including the blank line that ends it.
    """

    __slots__ = ("_buf", "_line", "_scan")

    def __init__(self) -> None:
        self._buf = b""  # from the start of the unfinished event
        self._line = 0  # where the current line starts in _buf
        self._scan = 0  # where to look for the next line end

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[bytes] = []
        start, line, pos = 0, self._line, self._scan
        for m in _LINE_END.finditer(buf, pos):
            if m.end() == len(buf) and m.group() == b"\r":
                pos = m.start()  # maybe the first half of CRLF: look again on the next feed
                break
            if m.start() == line:  # a blank line ends the event
                events.append(buf[start : m.end()])
                start = m.end()
            line = pos = m.end()
        else:
            pos = len(buf)
        self._buf = buf[start:]
        self._line, self._scan = line - start, pos - start
        return events

    def flush(self) -> bytes:
        """End of input: the bytes of an event that lacked its blank line (b"" if none)."""
        rest, self._buf, self._line, self._scan = self._buf, b"", 0, 0
        return rest


def complete_tail(raw: bytes) -> bytes:
    """What a passthrough stream may still send of the bytes after its last blank line, at its end.

    Some servers end their last event without the blank line (``data: [DONE]`` and EOF): such an
    event is complete all the same and goes on, ended. An event the body ends inside (a provider
    connection cut mid-body, which the stream relay ends cleanly) is not dispatched, as the SSE
    spec says of an event the stream ends in: the client never gets half a JSON document before
    the gateway's error event. Complete means it has data, and each ``data`` is ``[DONE]`` or a
    JSON document."""
    if not raw:
        return raw
    if not raw.endswith((b"\n", b"\r")):
        raw += b"\n\n"  # the provider stopped mid-line: end that event before ours
    decoder = SSEDecoder()
    events = decoder.feed(raw + b"\n\n") + decoder.flush()
    if not events:
        return b""  # an event name, a comment or a field cut before its data: nothing whole
    for event in events:
        if event.data == b"[DONE]":
            continue
        try:
            orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return b""
    return raw


class SSETranslator(ABC):
    """``feed``/``finish`` for a stream translator reading provider SSE.

    Subclasses translate whole events (``_events``) and say what ends the client's
    stream when the provider stops first (``_ended``: usually a truncation error).
    Once ``closed`` (the client's stream has ended), further input is ignored.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    @abstractmethod
    def _events(self, events: list[SSEEvent]) -> bytes: ...

    @abstractmethod
    def _ended(self) -> bytes: ...

    def _last_events(self, events: list[SSEEvent]) -> bytes:
        """The events flushed when the provider's stream ends."""
        return self._events(events)

    def feed(self, chunk: bytes) -> bytes:
        return b"" if self.closed else self._events(self._sse.feed(chunk))

    def finish(self) -> bytes:
        if self.closed:
            return b""
        out = self._last_events(self._sse.flush())
        return out if self.closed else out + self._ended()


class JSONEventTranslator(SSETranslator):
    """An ``SSETranslator`` for provider SSE whose events each carry one JSON object.

    Events that are not JSON objects are skipped; ``_event`` translates each of the others
    into OpenAI chunk frames, and one whose fields have the wrong type ends the stream with
    ``malformed_frames()``. ``_done`` is set once the client's stream has ended.
    """

    def __init__(self) -> None:
        super().__init__()
        self._done = False  # [DONE] was sent

    @property
    def closed(self) -> bool:
        return self._done

    @abstractmethod
    def _event(self, data: Json) -> bytes: ...

    def _events(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if self._done:
                break
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue  # not JSON: nothing we can translate
            if not isinstance(data, dict):
                continue
            try:
                out += self._event(data)
            except (AttributeError, TypeError, KeyError, ValueError):
                self._done = True  # a field of the wrong type: the upstream broke the protocol
                out += malformed_frames()
        return bytes(out)


def data_frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_frame(message: str, type_: str, code: str | int | None = None) -> bytes:
    """An OpenAI-style in-stream error; callers follow it with ``DONE``."""
    return data_frame(openai_error(message, type_, code))


def malformed_frames() -> bytes:
    """Ends a stream whose upstream sent an event with fields of the wrong shape."""
    return error_frame("malformed upstream stream event", "server_error", "bad_upstream_event") + DONE


def truncated_frames() -> bytes:
    """Ends a stream whose upstream stopped before its end (no stop reason or end event)."""
    return error_frame("upstream stream ended early", "server_error", "stream_truncated") + DONE
