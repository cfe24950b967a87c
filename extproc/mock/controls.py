"""The ``x-mock-*`` request headers with which a test steers one answer of the mock provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Controls:
    status: int | None = None
    delay_ms: int = 0
    chunk_bytes: int = 0
    chunk_delay_ms: int = 0
    stream_error_after: int | None = None
    fixture: str | None = None
    gzip: bool = False  # answer with Content-Encoding: gzip, as some providers and proxies do
    # x-mock-reply-pieces: a JSON array of strings. The answer's text is their concatenation and a
    # stream sends them as its text deltas, one per event (to split a word where a test wants).
    reply_pieces: tuple[str, ...] | None = None

    @classmethod
    def from_headers(cls, headers: Any) -> Controls:
        if not any(k[:7].lower() == "x-mock-" for k in headers):
            return _NO_CONTROLS  # fast path: the benchmark never sets controls
        status = _int_header(headers, "x-mock-status")
        return cls(
            status=status if status is not None and status >= 400 else None,
            delay_ms=max(0, _int_header(headers, "x-mock-delay-ms") or 0),
            chunk_bytes=max(0, _int_header(headers, "x-mock-chunk-bytes") or 0),
            chunk_delay_ms=max(0, _int_header(headers, "x-mock-chunk-delay-ms") or 0),
            stream_error_after=_int_header(headers, "x-mock-stream-error-after"),
            fixture=headers.get("x-mock-fixture") or None,
            gzip=headers.get("x-mock-gzip", "") in ("1", "true"),
            reply_pieces=_pieces(headers.get("x-mock-reply-pieces")),
        )


def _pieces(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed and all(isinstance(p, str) for p in parsed):
        return tuple(parsed)
    return None


def _int_header(headers: Any, name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


_NO_CONTROLS = Controls()
