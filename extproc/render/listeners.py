"""Listeners: one per bind (the gateway's filter chain), readiness (:15021) and metrics (:15020)."""

from __future__ import annotations

from extproc.gateway import Gateway
from extproc.render import filters
from extproc.render.common import (
    AUTHZ_CLUSTER,
    EXTPROC_CLUSTER,
    Json,
    seconds,
    socket_address,
    typed,
)
from extproc.render.local_replies import access_log, local_reply_config
from extproc.render.routes import virtual_hosts
from extproc.render.telemetry import metrics_routes, rejected_access_log
from extproc.render.tracing import hcm_tracing

# HTTP/2 requests at once on one client connection (Envoy's default is unbounded).
MAX_STREAMS_PER_CONNECTION = 100

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_NOT_FOUND = {
    "match": {"prefix": "/"},
    "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}},
}


def _hcm(stat_prefix: str, vhosts: list[Json], http_filters: list[Json], extra: Json | None = None) -> Json:
    config = typed(
        _HCM,
        stat_prefix=stat_prefix,
        route_config={"name": stat_prefix, "virtual_hosts": vhosts},
        http_filters=http_filters,
        **(extra or {}),
    )
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _any_host(name: str, routes: list[Json]) -> list[Json]:
    return [{"name": name, "domains": ["*"], "routes": routes}]


def gateway_listener(gw: Gateway, port: int, host: str) -> Json:
    name = f"bind_{port}"
    extra: Json = {
        "local_reply_config": local_reply_config(gw),
        **slow_client_limits(gw),
        "stream_idle_timeout": seconds(max(gw.request_timeout, 300.0)),
        **client_trust(gw),
        # Virtual hosts match the listener hostname whatever port the client put in Host.
        "strip_any_host_port": True,
        # Routes match the path as providers read it: dot segments (also percent-encoded ones)
        # resolved and repeated slashes merged, so /openai/../anthropic/... is the anthropic
        # route's, and the sidecar and a passthrough provider see that same path. An escaped
        # slash (%2F) would be a path separator to some servers and not to others: a 400.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # Clients cannot send Envoy's control headers nor the gateway's internal ones.
        "early_header_mutation_extensions": filters.early_header_mutations(),
        # Envoy's line for every request; the refused ones also go to extproc for their usage record.
        "access_log": [*access_log(), rejected_access_log(gw)],
        # Envoy's spans, to the collector the extproc sidecar exports to (config.tracing).
        **hcm_tracing(gw),
    }
    return {
        "name": name,
        "address": socket_address(host, port),
        "per_connection_buffer_limit_bytes": gw.limits.max_request_bytes,
        "filter_chains": [
            {"filters": [_hcm(name, virtual_hosts(gw, port, name), filters.gateway_chain(gw), extra)]}
        ],
    }


def slow_client_limits(gw: Gateway) -> Json:
    """How long a client may take, and how much it may hold (README, "Slow and hostile clients").

    ``request_headers_timeout``: the headers must arrive this soon after the connection opens
    (or the previous request ends). ``request_timeout`` (``uploadTimeout``): the whole request,
    body included, this soon; Envoy disarms it once the request has gone upstream or the answer
    has begun, so it never cuts a long answer or stream. A client sending half a body and
    stalling, or dripping a byte every few seconds (which keeps the idle timer alive), is cut
    with a JSON 408. An idle keep-alive connection is closed after ``idleConnectionTimeout``,
    and an HTTP/2 connection carries at most 100 requests at once, so one connection cannot
    take what ``maxConnections`` would grant a hundred."""
    return {
        "request_headers_timeout": seconds(gw.limit_seconds("request_headers_timeout")),
        "request_timeout": seconds(gw.limit_seconds("upload_timeout")),
        "common_http_protocol_options": {
            "idle_timeout": seconds(gw.limit_seconds("idle_connection_timeout"))
        },
        "http2_protocol_options": {"max_concurrent_streams": MAX_STREAMS_PER_CONNECTION},
    }


def client_trust(gw: Gateway) -> Json:
    """What Envoy believes of a client's own headers: neither its X-Forwarded-For nor its x-request-id.

    Envoy is the edge: the client address is the connection's peer (or, behind
    ``xffNumTrustedHops`` proxies, the X-Forwarded-For entry that many hops in), and Envoy appends
    the peer it saw. Every request is external (no internal address ranges), so Envoy replaces a
    client's x-request-id with its own; the client's value is kept apart (early header mutation)."""
    return {
        "use_remote_address": True,
        "xff_num_trusted_hops": gw.config.config.xff_num_trusted_hops,
        "preserve_external_request_id": False,
    }


def readiness_listener(gw: Gateway, host: str) -> Json:
    health = {
        "name": "envoy.filters.http.health_check",
        "typed_config": typed(
            "envoy.extensions.filters.http.health_check.v3.HealthCheck",
            pass_through_mode=False,
            headers=[{"name": ":path", "string_match": {"exact": "/ready"}}],
            # Ready only when Envoy is up and both sidecars pass their gRPC health checks.
            cluster_min_healthy_percentages={EXTPROC_CLUSTER: {"value": 100}, AUTHZ_CLUSTER: {"value": 100}},
        ),
    }
    return {
        "name": "readiness",
        "address": socket_address(host, gw.config.config.readiness_port),
        "filter_chains": [
            {"filters": [_hcm("readiness", _any_host("readiness", [_NOT_FOUND]), [health, filters.router()])]}
        ],
    }


def metrics_listener(gw: Gateway, host: str) -> Json:
    # /metrics: the gateway's metrics and Envoy's; /metrics/envoy: Envoy's alone (render/telemetry.py).
    routes = [*metrics_routes(), _NOT_FOUND]
    return {
        "name": "metrics",
        "address": socket_address(host, gw.config.config.metrics_port),
        "filter_chains": [{"filters": [_hcm("metrics", _any_host("metrics", routes), [filters.router()])]}],
    }
