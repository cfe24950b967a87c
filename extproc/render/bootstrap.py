"""The whole Envoy bootstrap for a resolved gateway config."""

from __future__ import annotations

from extproc.gateway import Gateway
from extproc.render.clusters import admin_cluster, backend_cluster, relay_cluster, sidecar_cluster
from extproc.render.common import (
    AUTHZ_CLUSTER,
    EXTPROC_CLUSTER,
    Json,
    SidecarAddresses,
    socket_address,
    typed,
)
from extproc.render.listeners import gateway_listener, metrics_listener, readiness_listener
from extproc.render.telemetry import metrics_cluster
from extproc.render.tracing import otlp_cluster, runtime_layers


def overload_manager(max_connections: int) -> Json:
    """At most ``limits.maxConnections`` downstream connections at once, over all listeners: past
    it Envoy closes new connections at once (no HTTP reply is possible before a request). Idle
    and slow clients are bounded by the listener's timeouts (listeners.py)."""
    monitor = "envoy.resource_monitors.global_downstream_max_connections"
    return {
        "resource_monitors": [
            {
                "name": monitor,
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    max_active_downstream_connections=max_connections,
                ),
            }
        ]
    }


def render(gw: Gateway, addrs: SidecarAddresses | None = None) -> Json:
    """The whole Envoy bootstrap as a dict (dump it as YAML or JSON)."""
    addrs = addrs or SidecarAddresses()
    admin_port = gw.config.config.admin_port
    ports = sorted({b.port for b in gw.config.binds})
    limit = gw.limits.max_connections
    clusters = [
        sidecar_cluster(EXTPROC_CLUSTER, addrs.extproc, gw.sidecar_timeout, limit),
        sidecar_cluster(AUTHZ_CLUSTER, addrs.authz, gw.sidecar_timeout, limit),
        admin_cluster(addrs.admin_host if addrs.admin_host != "0.0.0.0" else "127.0.0.1", admin_port),
        metrics_cluster(addrs.metrics),
        *otlp_cluster(gw),
    ]
    clusters += [
        backend_cluster(b, gw, direct=r.direct_upstream is not None) for r in gw.routes for b in r.backends
    ]
    if gw.limits.stream_relay:  # streams' provider leg (render/routes.py, extproc/stream_relay.py)
        clusters += [
            relay_cluster(b, gw, r.direct_upstream is not None, addrs.relay)
            for r in gw.routes
            for b in r.backends
        ]
    listeners = [gateway_listener(gw, p, addrs.listen_host) for p in ports]
    listeners += [readiness_listener(gw, addrs.listen_host), metrics_listener(gw, addrs.listen_host)]
    bootstrap = {
        "node": {"id": "llm-gateway", "cluster": "llm-gateway"},
        "admin": {"address": socket_address(addrs.admin_host, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": overload_manager(limit),
    }
    layers = runtime_layers(gw)
    if layers:
        bootstrap["layered_runtime"] = layers
    return bootstrap
