"""AWS event-stream (application/vnd.amazon.eventstream) encoder for the mock Bedrock provider.

botocore ships only a decoder, so the mock builds frames itself. Frame layout (all integers big-endian):
``[total_len u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from functools import lru_cache

HeaderValue = str | bytes | bool | int

MAX_HEADERS_LEN = 128 * 1024
MAX_PAYLOAD_LEN = 24 * 1024 * 1024
_PRELUDE_LEN = 12
_CRC_LEN = 4

# Header value type tags from the event-stream spec.
_TRUE, _FALSE, _INT32, _INT64, _BYTES, _STRING = 0, 1, 4, 5, 6, 7


def _encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 0 < len(raw) < 256:
        raise ValueError(f"header name length out of range: {name!r}")
    return bytes((len(raw),)) + raw


def _encode_value(value: HeaderValue) -> bytes:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return bytes((_TRUE if value else _FALSE,))
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return bytes((_INT32,)) + struct.pack(">i", value)
        return bytes((_INT64,)) + struct.pack(">q", value)
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("header value too long")
    return bytes((_BYTES if isinstance(value, bytes) else _STRING,)) + struct.pack(">H", len(raw)) + raw


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """Serialise headers in insertion order (Bedrock sends :event-type, :content-type, :message-type)."""
    return b"".join(_encode_name(name) + _encode_value(value) for name, value in headers.items())


def encode_frame(header_bytes: bytes, payload: bytes) -> bytes:
    """Build one frame from pre-encoded headers; split out so hot paths can cache header bytes."""
    if len(header_bytes) > MAX_HEADERS_LEN:
        raise ValueError("headers exceed 128 KiB")
    if len(payload) > MAX_PAYLOAD_LEN:
        raise ValueError("payload exceeds 24 MiB")
    total = _PRELUDE_LEN + len(header_bytes) + len(payload) + _CRC_LEN
    prelude = struct.pack(">II", total, len(header_bytes))
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    body = head + header_bytes + payload
    return body + struct.pack(">I", zlib.crc32(body))


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    return encode_frame(encode_headers(headers), payload)


@lru_cache(maxsize=64)
def _event_headers(event_type: str) -> bytes:
    return encode_headers(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    )


@lru_cache(maxsize=32)
def _exception_headers(exception_type: str) -> bytes:
    return encode_headers(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    )


def event_message(event_type: str, payload: bytes) -> bytes:
    """A normal ``:message-type event`` frame carrying a JSON payload."""
    return encode_frame(_event_headers(event_type), payload)


def exception_message(exception_type: str, payload: bytes) -> bytes:
    """A modelled exception frame (e.g. ``throttlingException``) as Bedrock sends mid-stream."""
    return encode_frame(_exception_headers(exception_type), payload)


def error_message(code: str, message: str) -> bytes:
    """An unmodelled ``:message-type error`` frame (no payload; details live in headers)."""
    return encode_message({":message-type": "error", ":error-code": code, ":error-message": message}, b"")
