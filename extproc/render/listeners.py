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
        "request_timeout": "0s",
        "stream_idle_timeout": seconds(max(gw.request_timeout, 300.0)),
        # Virtual hosts match the listener hostname whatever port the client put in Host.
        "strip_any_host_port": True,
        # Clients cannot send Envoy's control headers nor the gateway's internal ones.
        "early_header_mutation_extensions": filters.early_header_mutations(),
        # Envoy's line for every request; the refused ones also go to extproc for their usage record.
        "access_log": [*access_log(), rejected_access_log(gw)],
    }
    return {
        "name": name,
        "address": socket_address(host, port),
        "per_connection_buffer_limit_bytes": gw.limits.max_request_bytes,
        "filter_chains": [
            {"filters": [_hcm(name, virtual_hosts(gw, port, name), filters.gateway_chain(gw), extra)]}
        ],
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
