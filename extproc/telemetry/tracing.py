"""The gateway's spans over OTLP: where a trace comes from, who samples it, how spans leave.

A trace through the gateway (README "Traces"):

    Envoy's request span (its HCM tracer, same collector)
      Envoy's span of the router-phase ext_proc stream
        chat {model}                      the exchange (router phase), GenAI attributes
          attempt {n} {provider}          one per provider attempt; the provider gets its context

The router phase learns Envoy's current span from the ``traceparent`` Envoy's gRPC client puts
in the ext_proc stream's initial metadata (the request headers still carry the client's own,
which is Envoy's parent: measured with Envoy 1.40). Without Envoy tracing (no such metadata)
the request's ``traceparent`` header is the parent. Sampling follows the parent's flag, so the
gateway keeps exactly the traces Envoy keeps (Envoy decides with ``randomSampling``, rendered
as its ``random_sampling``); a trace that starts here is sampled at ``randomSampling``'s ratio.

Spans are recorded once complete, with ids chosen when the exchange or attempt began: no span
object lives across gRPC messages, and an attempt's span id can travel from the upstream phase
to the router phase in a header (``ATTEMPT_HEADER``), whichever worker serves each. A request
records a ``SpanRecord`` (its fields as given, nothing else: about 3 us, where building the
SDK's ``ReadableSpan`` with its contexts and status cost 18 us on the event loop). The SDK's
``BatchSpanProcessor`` queues records and exports from its own thread (a full queue drops spans,
never waits): the gRPC exporter encodes records itself (otlp_wire), any other exporter is handed
SDK spans, built there, off the request's path.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace import TraceState as W3CTraceState
from opentelemetry.trace.status import Status, StatusCode

from extproc.config.telemetry import TracingConfig, otlp_target
from extproc.headers import TRACE_ATTEMPT_HEADER, TRACE_DIRECT_HEADER
from extproc.telemetry import otlp_wire

log = logging.getLogger("gateway.tracing")

# The router phase's chat span, for the upstream phase (dynamic metadata in the gateway's namespace).
TRACE_KEY = "traceparent"
TRACESTATE_KEY = "tracestate"
# Single-provider routes: the attempt's context, for the upstream header mutation that puts it in
# ``traceparent`` after Envoy's router has written its own there (render/tracing.py).
DIRECT_HEADER = TRACE_DIRECT_HEADER
# Upstream phase -> router phase on an answer: ``<span id hex>-<start ns>-<attempt number>``.
ATTEMPT_HEADER = TRACE_ATTEMPT_HEADER

_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVICE_NAME = "gateway-extproc"  # OTEL_SERVICE_NAME overrides it
SCOPE = InstrumentationScope("llm-gateway")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """W3C trace context: (trace id, span id, sampled), or None when absent or malformed."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, bool(flags & 1)


def traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def new_span_id() -> int:
    return random.getrandbits(64) or 1


@dataclass(slots=True)
class Trace:
    """One exchange's place in its trace (``Exchange.trace``)."""

    trace_id: int
    parent_id: int  # 0: the trace starts at the chat span
    span_id: int  # the chat span
    sampled: bool
    tracestate: str = ""
    attempt_id: int = field(default_factory=new_span_id)  # the attempt span on single-provider routes
    sent_ns: int = 0  # when the router phase sent the request on (single-provider routes)
    method: str = "POST"
    path: str | None = None  # the provider's path (single-provider routes)
    handoff: str | None = None  # the upstream phase's answering attempt (ATTEMPT_HEADER)
    finish_reasons: list[str] = field(default_factory=list)
    response_id: str | None = None
    scan_tail: bytes = b""  # the answer's last bytes so far (pipeline/stages/span_notes.py)

    def header(self) -> str:
        """The chat span's context, as the parent of what the gateway calls."""
        return traceparent(self.trace_id, self.span_id, self.sampled)

    def attempt_header(self) -> str:
        return traceparent(self.trace_id, self.attempt_id, self.sampled)


# What BatchSpanProcessor.on_end asks of a span: its context, to keep only sampled ones (a record
# is only made for a sampled span).
_RECORD_CONTEXT = SpanContext(1, 1, is_remote=False, trace_flags=_SAMPLED)


class SpanRecord:
    """One finished span as the gateway knows it; ``readable`` makes the SDK's span of it."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "trace_id",
        "tracestate",
    )
    context = _RECORD_CONTEXT

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int,
        attributes: dict[str, Any],
        start_ns: int,
        end_ns: int,
        error: str | None,
        tracestate: str,
    ) -> None:
        self.name, self.trace_id, self.span_id, self.parent_id = name, trace_id, span_id, parent_id
        self.attributes, self.start_ns, self.end_ns = attributes, start_ns, end_ns
        self.error, self.tracestate = error, tracestate

    def trace_state(self) -> str:
        """The tracestate as W3C allows it (what the SDK would send of it)."""
        return W3CTraceState.from_header([self.tracestate]).to_header() if self.tracestate else ""

    def readable(self, resource: Resource) -> ReadableSpan:
        state = W3CTraceState.from_header([self.tracestate]) if self.tracestate else None
        trace_id = self.trace_id
        context = SpanContext(
            trace_id, self.span_id, is_remote=False, trace_flags=_SAMPLED, trace_state=state
        )
        parent = (
            SpanContext(trace_id, self.parent_id, is_remote=True, trace_flags=_SAMPLED)
            if self.parent_id
            else None
        )
        return ReadableSpan(
            self.name,
            context=context,
            parent=parent,
            resource=resource,
            attributes=self.attributes,
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, self.error) if self.error else Status(StatusCode.UNSET),
            start_time=self.start_ns,
            end_time=self.end_ns,
            instrumentation_scope=SCOPE,
        )


class _AsSdkSpans(SpanExporter):
    """An exporter that reads SDK spans (OTLP/HTTP's, a test's), given them in the export thread."""

    def __init__(self, inner: SpanExporter, resource: Resource) -> None:
        self.inner, self.resource = inner, resource

    def export(self, spans: Any) -> SpanExportResult:
        return self.inner.export([s.readable(self.resource) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Tracer:
    def __init__(self, cfg: TracingConfig, exporter: SpanExporter, schedule_delay_ms: float = 1000) -> None:
        self.ratio = cfg.ratio
        self.root = TraceIdRatioBased(self.ratio)
        self.resource = resource_of()
        if not getattr(exporter, "takes_records", False):
            exporter = _AsSdkSpans(exporter, self.resource)
        self.processor = BatchSpanProcessor(
            exporter, max_queue_size=8192, schedule_delay_millis=schedule_delay_ms, max_export_batch_size=512
        )

    def begin(self, envoy_parent: str | None, headers: Mapping[str, str]) -> Trace:
        """The exchange's trace: Envoy's span (or the client's) as parent, its sampling decision."""
        parent = parse_traceparent(envoy_parent) or parse_traceparent(headers.get("traceparent"))
        if parent is not None:
            trace_id, parent_id, sampled = parent
            # The client's vendor state goes on with its trace (Envoy's metadata carries none).
            return Trace(trace_id, parent_id, new_span_id(), sampled, headers.get("tracestate", ""))
        trace_id = random.getrandbits(128) or 1
        sampled = self.root.should_sample(None, trace_id, "").decision.is_sampled()
        return Trace(trace_id, 0, new_span_id(), sampled)

    def emit(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int,
        attributes: dict[str, Any],
        start_ns: int,
        end_ns: int,
        error: str | None = None,
        tracestate: str = "",
    ) -> None:
        """Record one finished, sampled span (the exporter thread sends it)."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        record = SpanRecord(
            name, trace_id, span_id, parent_id, attrs, start_ns, max(end_ns, start_ns), error, tracestate
        )
        self.processor.on_end(record)  # type: ignore[arg-type]  # it reads only .context, which a record has

    def shutdown(self) -> None:
        self.processor.shutdown()


def handoff(span_id: int, start_ns: int, number: int) -> str:
    return f"{span_id:016x}-{start_ns}-{number}"


def answering_attempt(ex: Any, tr: Trace) -> tuple[int, int, int] | None:
    """(span id, start ns, number) of the attempt whose answer the router phase read to its end.

    Single-provider routes: the router phase sent it (Envoy's retries to the same provider, if a
    retry policy allows them, share that one context; ``number`` is the last). Elsewhere: the
    upstream phase's, handed over on the answer's headers."""
    if ex.route.direct_upstream is not None:
        return (tr.attempt_id, tr.sent_ns, len(ex.attempts) or 1) if tr.sent_ns else None
    if not tr.handoff:
        return None
    try:
        span_hex, start, number = tr.handoff.split("-")
        return int(span_hex, 16), int(start), int(number)
    except ValueError:
        return None


def wall_ns(started_wall: float, started: float, at: float | None) -> int:
    """A monotonic instant of the exchange as epoch nanoseconds (spans carry wall time)."""
    return int((started_wall + ((at if at is not None else time.monotonic()) - started)) * 1e9)


def resource_of() -> Resource:
    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})


def exporter_for(cfg: TracingConfig, resource: Resource | None = None) -> SpanExporter:
    """OTLP/gRPC (spans encoded by otlp_wire: the SDK's encoder costs about 5x more CPU a span) or
    OTLP/HTTP (the SDK's own encoder)."""
    resource = resource or resource_of()
    target = otlp_target(cfg.otlp_endpoint, cfg.otlp_protocol)
    if cfg.otlp_protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        scheme = "https" if target.secure else "http"
        return HttpExporter(endpoint=f"{scheme}://{target.host}:{target.port}{target.path}", timeout=5)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    encoder = otlp_wire.Encoder(resource, SCOPE)

    class RawStub:
        """TraceService's Export taking the request already encoded: no parse into the generated
        message and serialisation back (the same bytes, twice the work)."""

        def __init__(self, channel: grpc.Channel) -> None:
            self.Export = channel.unary_unary(
                _EXPORT_METHOD,
                request_serializer=None,  # bytes as they are
                response_deserializer=ExportTraceServiceResponse.FromString,
            )

    class Exporter(GrpcExporter):
        """The SDK's gRPC exporter (batching, retries, TLS) with the gateway's own encoder, which
        reads the gateway's span records as they are."""

        takes_records = True

        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = RawStub(self._channel)

        def _translate_data(self, data: Any) -> Any:
            return encoder.encode(data)

    return Exporter(endpoint=f"{target.host}:{target.port}", insecure=not target.secure, timeout=5)


def start(cfg: TracingConfig) -> Tracer:
    tracer = Tracer(cfg, exporter_for(cfg, resource_of()))
    atexit.register(tracer.shutdown)  # what is queued is sent on a clean exit
    log.info(
        "tracing: OTLP/%s to %s, new traces sampled at %g (a client's follow Envoy's decision)",
        cfg.otlp_protocol,
        cfg.otlp_endpoint,
        cfg.ratio,
    )
    return tracer
