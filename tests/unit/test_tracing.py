"""Traces without Envoy: trace context, sampling, attributes, OTLP/HTTP export, Envoy's rendering.
(Through the real Envoy, into a real OTLP receiver: tests/e2e/test_tracing.py.)"""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from extproc import gateway
from extproc.config.loader import ConfigError, parse_text
from extproc.config.telemetry import TracingConfig, otlp_target, tracing_of
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages import RoutePipeline
from extproc.pipeline.stages.span_notes import SpanNotes
from extproc.pipeline.stages.usage_record import UsageRecord
from extproc.ports import free_port
from extproc.render import dump, render
from extproc.supervisor import envoy_binary
from extproc.telemetry import spans, tracing
from extproc.telemetry.prices import Cost
from extproc.telemetry.runtime import Telemetry
from tests.unit.test_telemetry import CONFIG, build, exchange

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list = []

    def export(self, spans: list) -> SpanExportResult:  # type: ignore[override]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def tracer(ratio: float | bool = True) -> tuple[tracing.Tracer, Collect]:
    sink = Collect()
    cfg = TracingConfig.model_validate({"otlpEndpoint": "http://127.0.0.1:4317", "randomSampling": ratio})
    return tracing.Tracer(cfg, sink, schedule_delay_ms=10), sink


# --- trace context and sampling ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, "", "garbage", "00-abc-def-01", "ff-" + PARENT[3:], "00-" + "0" * 32 + "-b7ad6b7169203331-01",
     "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
)  # fmt: skip
def test_malformed_traceparents_are_no_parent(value: str | None) -> None:
    assert tracing.parse_traceparent(value) is None


def test_traceparent_round_trip() -> None:
    assert tracing.parse_traceparent(PARENT) == (TRACE_ID, 0xB7AD6B7169203331, True)
    assert tracing.traceparent(TRACE_ID, 0xB7AD6B7169203331, True) == PARENT
    assert tracing.parse_traceparent(PARENT[:-2] + "00") == (TRACE_ID, 0xB7AD6B7169203331, False)


def test_envoys_span_is_the_parent_and_its_decision_stands() -> None:
    t, _ = tracer(0.0)  # no new trace would be sampled: Envoy's decision wins for its own
    envoy = "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01"
    tr = t.begin(envoy, {"traceparent": PARENT, "tracestate": "vendor=1"})
    assert (tr.trace_id, tr.parent_id, tr.sampled, tr.tracestate) == (TRACE_ID, 0x1111111111111111, True, "vendor=1")
    unsampled = t.begin(envoy[:-2] + "00", {"traceparent": PARENT})
    assert unsampled.sampled is False
    # Without Envoy tracing the request's own header is the parent.
    assert t.begin(None, {"traceparent": PARENT}).parent_id == 0xB7AD6B7169203331
    assert tr.span_id not in (0, tr.parent_id) and tr.attempt_id not in (0, tr.span_id)


@pytest.mark.parametrize(("ratio", "share"), [(True, 1.0), (False, 0.0), (1.0, 1.0), (0.0, 0.0)])
def test_new_traces_are_sampled_at_the_ratio(ratio: float | bool, share: float) -> None:
    t, _ = tracer(ratio)
    got = [t.begin(None, {}) for _ in range(200)]
    assert all(tr.parent_id == 0 for tr in got)
    assert sum(tr.sampled for tr in got) == 200 * share


def test_a_ratio_samples_about_that_share() -> None:
    t, _ = tracer(0.25)
    sampled = sum(t.begin(None, {}).sampled for _ in range(4000))
    assert 800 < sampled < 1200


# --- config ---------------------------------------------------------------------------------------------


def test_otlp_targets() -> None:
    assert otlp_target("http://127.0.0.1:4317", "grpc") == tracing_target(False, "127.0.0.1", 4317, "")
    assert otlp_target("jaeger:4317", "grpc") == tracing_target(False, "jaeger", 4317, "")
    assert otlp_target("http://collector", "http") == tracing_target(False, "collector", 4318, "/v1/traces")
    assert otlp_target("https://otel.example.com/v1/traces", "http") == tracing_target(
        True, "otel.example.com", 443, "/v1/traces"
    )


def tracing_target(secure: bool, host: str, port: int, path: str) -> object:
    from extproc.config.telemetry import OtlpTarget

    return OtlpTarget(secure, host, port, path)


@pytest.mark.parametrize("endpoint", ["ftp://x:1", "http://", "http://host:port"])
def test_bad_endpoints_are_load_errors(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="otlpEndpoint"):
        traced_gateway(f"{{otlpEndpoint: '{endpoint}'}}")


def test_the_standard_otlp_environment_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = gateway.build(parse_text(CONFIG).config)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing_of(gw.config.config) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    cfg = tracing_of(gw.config.config)
    assert cfg is not None and cfg.otlp_protocol == "http" and cfg.ratio == 1.0
    bootstrap = render(gw)
    assert "gw_otlp" in {c["name"] for c in bootstrap["static_resources"]["clusters"]}


# --- attributes -----------------------------------------------------------------------------------------


def test_chat_span_attributes_follow_genai_conventions() -> None:
    gw, _ = build()
    ex = exchange(gw, stream=True)
    ex.llm.body.update({"max_completion_tokens": 77, "top_p": 0.5, "stop": "END", "seed": 3, "n": 2})  # type: ignore[union-attr]
    t, _ = tracer()
    ex.trace = t.begin(PARENT, {})
    ex.trace.finish_reasons, ex.trace.response_id = ["stop"], "chatcmpl-1"
    a = spans.chat_attributes(ex, Cost(0.00042, "priced"))
    assert spans.chat_name(ex) == "chat gpt-4o"
    assert {k: a[k] for k in a if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o", "gen_ai.request.stream": True, "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 77, "gen_ai.request.top_p": 0.5, "gen_ai.request.seed": 3,
        "gen_ai.request.choice.count": 2, "gen_ai.request.stop_sequences": ["END"],
        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
        "gen_ai.usage.cache_read.input_tokens": 40, "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.time_to_first_chunk": 0.5,
    }  # fmt: skip
    assert a["gateway.cost.usd"] == 0.00042 and "error.type" not in a
    assert "gen_ai.usage.reasoning.output_tokens" not in a  # zero: left out (every span is sent)
    ex.status, ex.outcome, ex.error = 429, "provider_error", "rate limited, key sk-abcdefghijklmnop"
    assert spans.chat_attributes(ex, None)["error.type"] == "429"
    assert "sk-abcdefghijklmnop" not in (spans.chat_error(ex) or "")


def test_field_values_become_flat_attributes_and_span_name() -> None:
    values = {"span.name": "llm gpt-4o", "n": 1, "ok": True, "none": None, "tags": ["a", "b"],
              "prompt": [{"role": "user", "content": "hi"}]}  # fmt: skip
    attrs, name = spans.field_attributes(values)
    assert name == "llm gpt-4o"
    assert attrs == {"n": 1, "ok": True, "tags": ["a", "b"], "prompt": '[{"role":"user","content":"hi"}]'}


def test_telemetry_records_chat_and_direct_attempt_spans() -> None:
    gw, base = build()
    t, sink = tracer()
    telemetry = Telemetry(base.metrics, base.prices, base.log_fields, base.metric_fields, tracer=t)
    ex = exchange(gw)
    ex.started_wall = 1_700_000_000.0
    ex.trace = t.begin(PARENT, {})
    ex.trace.sent_ns = int((ex.started_wall + 0.1) * 1e9)
    telemetry.trace(ex, telemetry.cost_of(ex), None)
    t.processor.force_flush()
    chat, attempt = sink.spans
    assert chat.name == "chat gpt-4o" and attempt.name == "attempt 1 openai"
    assert chat.parent.span_id == 0xB7AD6B7169203331 and attempt.parent.span_id == chat.context.span_id
    assert attempt.context.span_id == ex.trace.attempt_id
    assert chat.end_time - chat.start_time == 2_000_000_000 and attempt.end_time == chat.end_time
    unsampled = exchange(gw)
    unsampled.trace = t.begin(PARENT[:-2] + "00", {})
    telemetry.trace(unsampled, None, None)
    t.processor.force_flush()
    assert len(sink.spans) == 2


def test_finish_reasons_split_between_chunks_count_once() -> None:
    gw, _ = build()
    ex = exchange(gw, stream=True)
    t, _ = tracer()
    ex.trace = t.begin(PARENT, {})
    stream = (b'data: {"id":"chatcmpl-9","choices":[{"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
              b'data: {"id":"chatcmpl-9","choices":[{"delta":{},"finish_reason":"length"}]}\n\n')  # fmt: skip
    notes = SpanNotes()
    for i in range(0, len(stream), 7):
        assert notes.on_response_chunk(ex, stream[i : i + 7]) == stream[i : i + 7]
    assert ex.trace.finish_reasons == ["length"] and ex.trace.response_id == "chatcmpl-9"


def test_span_notes_read_the_answer_and_leave_its_bytes_to_the_provider() -> None:
    class Rewriter(Stage):
        def on_response_chunk(self, ex: Any, data: bytes) -> bytes:
            return data.upper()

    reading = RoutePipeline.of([SpanNotes(), UsageRecord()])
    assert reading.chunk_stages and not reading.rewrites  # read, so content-length stays
    assert RoutePipeline.of([SpanNotes(), Rewriter(), UsageRecord()]).rewrites


# --- OTLP/HTTP --------------------------------------------------------------------------------------------


def test_otlp_http_export_reaches_a_collector() -> None:
    got: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = TracingConfig.model_validate(
            {"otlpEndpoint": f"http://127.0.0.1:{server.server_port}", "otlpProtocol": "http"}
        )
        t = tracing.Tracer(cfg, tracing.exporter_for(cfg), schedule_delay_ms=10)
        t.emit("chat gpt-4o", TRACE_ID, 5, 7, {"gen_ai.operation.name": "chat"}, 1, 2)
        t.processor.force_flush()
    finally:
        server.shutdown()
    (path, body), *_ = got
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert path == "/v1/traces" and span.name == "chat gpt-4o" and span.trace_id.hex() == f"{TRACE_ID:032x}"
    service = {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}
    assert service["service.name"] == "gateway-extproc"


# --- Envoy's part -----------------------------------------------------------------------------------------


def traced_gateway(tracing_yaml: str) -> gateway.Gateway:
    head, tail = CONFIG.split("  metrics:", 1)
    return gateway.build(parse_text(f"{head}  tracing: {tracing_yaml}\n  metrics:{tail}").config)


def _clusters(bootstrap: dict) -> dict[str, dict]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


def test_without_tracing_nothing_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    bootstrap = render(gateway.build(parse_text(CONFIG).config))
    text = dump(bootstrap)
    assert "gw_otlp" not in text and "envoy.tracers" not in text and "envoy.filters.http.header_mutation" not in text
    assert "layered_runtime" not in bootstrap  # Envoy's default runtime
    opts = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    upstream = [
        f["typed_config"] for c in _clusters(bootstrap).values()
        for f in c.get("typed_extension_protocol_options", {}).get(opts, {}).get("http_filters", [])
        if f["name"] == "envoy.filters.http.ext_proc"
    ]  # fmt: skip
    assert upstream and all(f["request_attributes"] == ["xds.upstream_host_metadata"] for f in upstream)


def test_tracing_renders_envoys_tracer_collector_and_attempt_context(tmp_path: Path) -> None:
    gw = traced_gateway("{otlpEndpoint: 'https://otel.example.com', otlpProtocol: http, randomSampling: 0.25}")
    bootstrap = render(gw)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["tracing"]["random_sampling"] == {"value": 25.0}
    otel = hcm["tracing"]["provider"]["typed_config"]
    assert otel["service_name"] == "gateway-envoy"
    assert otel["http_service"]["http_uri"]["uri"] == "https://otel.example.com:443/v1/traces"
    clusters = _clusters(bootstrap)
    assert clusters["gw_otlp"]["transport_socket"]["typed_config"]["sni"] == "otel.example.com"
    direct = clusters[gw.routes_by_id["chat"].backends[0].cluster]
    http_filters = direct["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
    mutation = http_filters[0]["typed_config"]["mutations"]["request_mutations"]
    assert mutation[0]["append"]["header"] == {"key": "traceparent", "value": "%REQ(x-gw-traceparent)%"}
    assert mutation[1] == {"remove": "x-gw-traceparent"}
    group = clusters[gw.routes_by_id["fo"].backends[0].cluster]
    ext_proc = group["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"][0]
    assert "upstream.request_attempt_count" in ext_proc["typed_config"]["request_attributes"]
    # Envoy's tracer exports in batches of 512 spans (or every 5 s), not every 5 spans (its default).
    static, admin = bootstrap["layered_runtime"]["layers"]
    assert static["static_layer"] == {"tracing.opentelemetry.min_flush_spans": 512} and "admin_layer" in admin
    out = tmp_path / "envoy.yaml"
    out.write_text(dump(bootstrap))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_wires_jaeger_to_envoy_and_extproc_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under docker compose, OTEL_EXPORTER_OTLP_ENDPOINT reaches both the render step (Envoy's
    tracer) and extproc (its exporter), and names Jaeger's OTLP port."""
    import yaml

    from extproc.config.loader import load

    root = Path(__file__).resolve().parents[2]
    services = yaml.safe_load((root / "docker-compose.yaml").read_text())["services"]
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"}
    for name in ("render", "extproc"):
        assert otlp <= set(services[name]["environment"]), name
    assert "4317:4317" in services["jaeger"]["ports"] and services["jaeger"]["profiles"] == ["observability", "all"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    bootstrap = render(gateway.build(load(root / "policies" / "gateway.yaml").config))
    address = _clusters(bootstrap)["gw_otlp"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "jaeger", "port_value": 4317}


def test_the_wire_encoder_writes_what_the_sdks_encoder_writes() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from extproc.telemetry import otlp_wire

    t, _ = tracer()
    attrs = {"s": "x", "b": True, "one": 1, "neg": -5, "f": 0.25, "list": ["a", "b"], "big": 2**40}
    records = [
        tracing.SpanRecord("chat gpt-4o", TRACE_ID, 5, 7, attrs, 1, 2, None, "vendor=1,other=2"),
        tracing.SpanRecord("attempt 1 openai", TRACE_ID, 8, 5, {"s": "x", "one": True}, 3, 4, "the provider answered 503", ""),
        tracing.SpanRecord("root", TRACE_ID, 9, 0, {}, 5, 6, None, ""),
        tracing.SpanRecord("bad state", TRACE_ID, 10, 0, {}, 5, 6, None, "bad key=x"),
    ]  # fmt: skip
    encoder = otlp_wire.Encoder(t.resource, tracing.SCOPE)
    for _ in range(2):  # the second time from the cache
        assert encoder.request(records) == encode_spans([r.readable(t.resource) for r in records])
    sent = encoder.request(records).resource_spans[0].scope_spans[0].spans
    assert sent[0].trace_state == "vendor=1,other=2" and sent[3].trace_state == ""  # malformed: dropped, as the SDK


def test_a_span_is_recorded_as_given_and_built_for_the_sdk_only_in_the_export_thread() -> None:
    """The gRPC exporter (otlp_wire) reads records; any other exporter gets SDK spans, built by
    the export thread, so a request never builds one."""
    got: list[tuple[str, list[Any]]] = []

    class Records(Collect):
        takes_records = True

        def export(self, spans: Any) -> Any:
            got.append((threading.current_thread().name, list(spans)))
            return super().export(spans)

    cfg = TracingConfig.model_validate({"otlpEndpoint": "http://127.0.0.1:4317"})
    raw = tracing.Tracer(cfg, Records(), schedule_delay_ms=10)
    raw.emit("chat gpt-4o", TRACE_ID, 5, 7, {"a": 1, "gone": None}, 10, 4, error="")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:  # the export thread's next turn (10 ms)
        time.sleep(0.01)
    (thread, (record,)), *_ = got
    assert thread != threading.main_thread().name and isinstance(record, tracing.SpanRecord)
    assert record.attributes == {"a": 1} and (record.start_ns, record.end_ns) == (10, 10)
    sdk, sink = tracer()
    sdk.emit("chat gpt-4o", TRACE_ID, 5, 7, {"a": 1}, 10, 20, error="boom")
    sdk.emit("attempt", TRACE_ID, 6, 5, {}, 10, 20, error="")
    sdk.processor.force_flush()
    failed, unset = sink.spans
    assert failed.status.status_code.name == "ERROR" and failed.status.description == "boom"
    assert unset.status.status_code.name == "UNSET" and failed.context.trace_flags.sampled
