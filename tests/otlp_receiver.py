"""A real OTLP trace receiver for tests: the protocol's own TraceService (opentelemetry-proto's
generated stubs) on grpcio in a thread, keeping every span it is sent, from any exporter (Envoy's
OpenTelemetry tracer, the extproc sidecar's OTLP exporter)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from extproc.ports import free_port


def any_value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Receiver) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        got = []
        for rs in request.resource_spans:
            res = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            service=str(res.get("service.name", "")),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            status_code=s.status.code,
                            attributes={kv.key: any_value(kv.value) for kv in s.attributes},
                        )
                    )
        with self.sink.lock:
            self.sink.spans.extend(got)
            self.sink.raw.append(request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.spans: list[Span] = []
        self.raw: list[bytes] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(self), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=0)

    def clear(self) -> None:
        with self.lock:
            self.spans.clear()
            self.raw.clear()

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait(self, ready: Callable[[list[Span]], bool], timeout: float = 15.0) -> list[Span]:
        """Every span so far, once ``ready`` accepts them (exporters send in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if ready(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)
