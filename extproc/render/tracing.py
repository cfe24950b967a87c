"""Envoy's part in a trace (``config.tracing``, or ``OTEL_EXPORTER_OTLP_ENDPOINT``: config/telemetry.py).

- the gateway listeners' HttpConnectionManager traces with Envoy's OpenTelemetry tracer to the
  same collector as the extproc sidecar (OTLP/gRPC, or OTLP/HTTP), through the ``gw_otlp``
  cluster; Envoy continues a client's ``traceparent`` and samples new traces at
  ``randomSampling`` (its ``random_sampling``), and the sidecar follows Envoy's decision;
- Envoy's gRPC client passes its span of each ext_proc stream in the stream's metadata, which is
  how the sidecar's spans become children of Envoy's (extproc/telemetry/tracing.py);
- per attempt, Envoy's router writes its own span into ``traceparent``. The gateway's attempt
  span must be the provider's parent instead: the upstream phase sets it after Envoy did
  (multi-provider routes, which also tell it the attempt's number), and on single-provider
  routes an upstream header mutation copies the router phase's ``x-gw-traceparent`` over it.
- Envoy's tracer sends a batch every ``MIN_FLUSH_SPANS`` spans (Envoy's default is 5: a gRPC export
  every other request, most of tracing's cost in Envoy, measured with bench/observability.py) or
  every 5 s (its ``flush_interval_ms``), whichever comes first (``runtime_layers``).
Without tracing nothing here is rendered.
"""

from __future__ import annotations

from extproc.config.telemetry import TracingConfig, otlp_target, tracing_of
from extproc.gateway import Gateway
from extproc.headers import TRACE_DIRECT_HEADER as DIRECT_HEADER
from extproc.render.common import Json, socket_address, typed

OTLP_CLUSTER = "gw_otlp"
SERVICE_NAME = "gateway-envoy"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


MIN_FLUSH_SPANS = 512


def runtime_layers(gw: Gateway) -> Json:
    """The bootstrap's ``layered_runtime`` when tracing is on (else none: Envoy's own default)."""
    if config_of(gw) is None:
        return {}
    static = {"tracing.opentelemetry.min_flush_spans": MIN_FLUSH_SPANS}
    # The admin layer as Envoy has one by default, so /runtime_modify still works.
    return {"layers": [{"name": "static", "static_layer": static}, {"name": "admin", "admin_layer": {}}]}


def config_of(gw: Gateway) -> TracingConfig | None:
    return tracing_of(gw.config.config)


def hcm_tracing(gw: Gateway) -> Json:
    """The HttpConnectionManager's ``tracing`` (as a dict to splice into its config)."""
    cfg = config_of(gw)
    if cfg is None:
        return {}
    otel: Json = {"service_name": SERVICE_NAME}
    if cfg.otlp_protocol == "http":
        target = otlp_target(cfg.otlp_endpoint, "http")
        scheme = "https" if target.secure else "http"
        otel["http_service"] = {
            "http_uri": {
                "uri": f"{scheme}://{target.host}:{target.port}{target.path}",
                "cluster": OTLP_CLUSTER,
                "timeout": "2s",
            }
        }
    else:
        otel["grpc_service"] = {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "2s"}
    return {
        "tracing": {
            "random_sampling": {"value": round(cfg.ratio * 100, 6)},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": typed("envoy.config.trace.v3.OpenTelemetryConfig", **otel),
            },
        }
    }


def otlp_cluster(gw: Gateway) -> list[Json]:
    """The collector, as Envoy reaches it (none without tracing)."""
    cfg = config_of(gw)
    if cfg is None:
        return []
    target = otlp_target(cfg.otlp_endpoint, cfg.otlp_protocol)
    http = {"http2_protocol_options": {}} if cfg.otlp_protocol == "grpc" else {"http_protocol_options": {}}
    endpoint = {"endpoint": {"address": socket_address(target.host, target.port)}}
    cluster: Json = {
        "name": OTLP_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {_HTTP_OPTIONS: typed(_HTTP_OPTIONS, explicit_http_config=http)},
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
    }
    if target.secure:
        context = {
            "validation_context": {
                "trusted_ca": {"filename": _CA_BUNDLE},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": target.host}}],
            }
        }
        tls = typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            common_tls_context=context,
            sni=target.host,
        )
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return [cluster]


def upstream_attributes(gw: Gateway) -> list[str]:
    """What the upstream phase reads besides its own: the attempt's number, for its span."""
    return ["upstream.request_attempt_count"] if config_of(gw) is not None else []


def direct_trace_filters(gw: Gateway) -> list[Json]:
    """Single-provider routes: the gateway's attempt context over the one Envoy's router wrote.

    A header absent (no trace) formats as empty and is not added: Envoy's stays."""
    if config_of(gw) is None:
        return []
    return [
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": typed(
                "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                mutations={
                    "request_mutations": [
                        {
                            "append": {
                                "header": {"key": "traceparent", "value": f"%REQ({DIRECT_HEADER})%"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        },
                        {"remove": DIRECT_HEADER},
                    ]
                },
            ),
        }
    ]
