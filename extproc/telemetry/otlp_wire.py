"""The gateway's spans as an OTLP ``ExportTraceServiceRequest``, encoded by hand.

The SDK's encoder builds a protobuf object per attribute and hashes the resource (a JSON dump)
per span: about 80 us a span, on the extproc sidecar's one core. This writes the same wire bytes
directly, and a repeated attribute (most are: operation, provider, model, route) from a cache,
for about half the CPU. It reads the gateway's ``SpanRecord`` s (tracing.py) and covers what
they hold: one resource and scope for all, client spans, string, bool, int, float and
string-list attributes, a status, no events or links.
The gRPC exporter sends these bytes as they are (tracing.exporter_for); ``request`` parses them
into the generated message for whoever needs the object.

Field numbers: opentelemetry-proto's trace/v1/trace.proto, common/v1/common.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

if TYPE_CHECKING:
    from extproc.telemetry.tracing import SpanRecord

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
# Span.flags: whether the parent is remote is known (0x100), and it is (0x200); as the SDK's encoder.
_FLAGS_LOCAL_PARENT = _FIXED32.pack(0x100)
_FLAGS_REMOTE_PARENT = _FIXED32.pack(0x300)
_KIND_CLIENT = b"\x30\x03"  # Span.kind = SPAN_KIND_CLIENT, the kind of every span the gateway sends
_STATUS_ERROR = 2  # Status.code = STATUS_CODE_ERROR


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _value(v: Any) -> bytes:
    """An AnyValue's body."""
    t = type(v)
    if t is str:
        return _field(1, v.encode())
    if t is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if t is int:
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
    if t is float:
        return b"\x21" + _DOUBLE.pack(v)
    if t is list or t is tuple:
        return _field(5, b"".join(_field(1, _value(x)) for x in v))
    return _field(1, str(v).encode())


# Most attributes repeat from span to span (operation, provider, model, route, status...): their
# encoded KeyValue is kept, so a repeat costs a dict lookup, not an encoding. Bounded: cleared when full.
_CACHEABLE = (str, bool, int)
_CACHE_MAX = 8192
_kv_cache: dict[tuple[str, type, Any], bytes] = {}


def _key_value(k: str, v: Any) -> bytes:
    return _field(1, k.encode()) + _field(2, _value(v))


def attributes(field_number: int, attrs: Any) -> bytes:
    out = []
    cache = _kv_cache
    for k, v in attrs.items():
        t = type(v)
        if t in _CACHEABLE:
            key = (k, t, v)  # the type too: True == 1, and both hash alike
            kv = cache.get(key)
            if kv is None:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                kv = cache[key] = _key_value(k, v)
        else:
            kv = _key_value(k, v)
        out.append(kv)
    tag = _varint(field_number << 3 | 2)
    return b"".join(tag + _varint(len(kv)) + kv for kv in out)


def _span(s: SpanRecord) -> bytes:
    out = [
        b"\x0a\x10" + s.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + s.span_id.to_bytes(8, "big"),
    ]
    if s.tracestate:
        state = s.trace_state()
        if state:
            out.append(_field(3, state.encode()))
    if s.parent_id:
        out.append(b"\x22\x08" + s.parent_id.to_bytes(8, "big"))
    out += [
        _field(5, s.name.encode()),
        _KIND_CLIENT,
        b"\x39" + _FIXED64.pack(s.start_ns),
        b"\x41" + _FIXED64.pack(s.end_ns),
        attributes(9, s.attributes),
    ]
    if s.error:
        out.append(_field(15, _field(2, s.error.encode()) + b"\x18" + _varint(_STATUS_ERROR)))
    else:
        out.append(b"\x7a\x00")  # an empty status, as the SDK writes it
    # A parent (Envoy's span; the chat span, for an attempt) is recorded apart: flagged remote.
    out.append(b"\x85\x01" + (_FLAGS_REMOTE_PARENT if s.parent_id else _FLAGS_LOCAL_PARENT))
    return b"".join(out)


class Encoder:
    """One resource and scope (the extproc sidecar's), encoded once."""

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self.resource = _field(1, attributes(1, resource.attributes))
        version = _field(2, scope.version.encode()) if scope.version else b""
        self.scope = _field(1, _field(1, scope.name.encode()) + version)

    def encode(self, spans: Sequence[SpanRecord]) -> bytes:
        scope_spans = self.scope + b"".join(_field(2, _span(s)) for s in spans)
        return _field(1, self.resource + _field(2, scope_spans))

    def request(self, spans: Sequence[SpanRecord]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(self.encode(spans))
