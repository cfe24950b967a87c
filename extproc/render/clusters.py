"""Clusters: the two sidecars, the admin API (for /metrics), and one per route backend.

A backend cluster holds every provider endpoint of the backend, each provider group a priority
level, so a retry moves to the next group (failover). Each endpoint carries its gateway id in
metadata, and its TLS settings through a transport socket match.
"""

from __future__ import annotations

import ipaddress

from extproc.gateway import Gateway, ResolvedBackend, Upstream
from extproc.headers import METADATA_NAMESPACE, RELAY_METADATA_KEY
from extproc.render.common import (
    ADMIN_CLUSTER,
    Json,
    relay_cluster_name,
    seconds,
    socket_address,
    split_hostport,
    typed,
)
from extproc.render.filters import upstream_codec, upstream_ext_proc
from extproc.render.tracing import direct_trace_filters

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_SOCKET_MATCH = "envoy.transport_socket_match"
_PLAINTEXT = "plaintext"


def circuit_breakers(limit: int) -> Json:
    """Limits sized to what the listeners accept (``limits.maxConnections``), not Envoy's defaults.

    Envoy's defaults (1024 connections, pending requests and requests, and 3 concurrent retries
    per cluster) suit short RPCs. Here a request lasts seconds to minutes, and a retry is how
    failover works: with the primary answering 429 and more than 3 requests in flight, Envoy
    dropped the extra retries (``upstream_rq_retry_overflow``) and those clients got the
    primary's 429. Retries are already bounded per request by the route's attempts, and a
    failing primary's retries go to the next provider group, which is the traffic failover must
    carry, so no cluster-wide retry budget is set: the cap equals the request cap. Provider
    rate limits are the providers' to enforce (their 429s are what fails over)."""
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": limit,
                "max_pending_requests": limit,
                "max_requests": limit,
                "max_retries": limit,
            }
        ]
    }


def sidecar_cluster(name: str, address: str, timeout: float, max_requests: int) -> Json:
    host, port = split_hostport(address)
    return {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": seconds(min(timeout, 1.0)),
        "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
        # Each request holds a gRPC stream open for as long as it runs (two when it fails over).
        "circuit_breakers": circuit_breakers(max_requests),
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: typed(
                _HTTP_OPTIONS,
                explicit_http_config={
                    "http2_protocol_options": {
                        "initial_stream_window_size": 1048576,
                        "initial_connection_window_size": 4194304,
                    }
                },
            )
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
        },
        # Readiness (:15021/ready) requires these to pass: the gateway is ready only with both sidecars.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "common_lb_config": {"healthy_panic_threshold": {"value": 100}},
    }


def admin_cluster(admin_host: str, admin_port: int) -> Json:
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(admin_host, admin_port)}}]}
            ],
        },
    }


# --- backend clusters ------------------------------------------------------------------------------


def _tls_key(up: Upstream) -> tuple[str, bool]:
    return (up.sni or up.host, up.insecure_skip_verify)


def _tls_socket(sni: str, insecure: bool) -> Json:
    """TLS to a provider: the system CAs and the name it was dialled by (or ``backendTLS.sni``).

    A chain check alone would accept any publicly trusted certificate, so the certificate must
    also name the host. ``insecureSkipVerify`` drops both checks (self-signed test servers)."""
    context: Json = {}
    is_ip = _is_ip(sni)
    if not insecure:
        san = {"san_type": "IP_ADDRESS" if is_ip else "DNS", "matcher": {"exact": sni}}
        context = {
            "validation_context": {
                "trusted_ca": {"filename": _CA_BUNDLE},
                "match_typed_subject_alt_names": [san],
            }
        }
    tls = typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", common_tls_context=context)
    if not is_ip:  # SNI carries host names only (RFC 6066)
        tls["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": tls}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _transport(backend: ResolvedBackend) -> tuple[dict[str, str], list[Json]]:
    """One transport socket per distinct TLS setting; each endpoint picks its own by metadata."""
    profiles: dict[tuple[str, bool], str] = {}
    by_upstream: dict[str, str] = {}
    matches: list[Json] = []
    for up in backend.upstreams:
        if not up.tls:
            by_upstream[up.id] = _PLAINTEXT
            continue
        key = _tls_key(up)
        if key not in profiles:
            profiles[key] = f"tls{len(profiles)}"
            matches.append(
                {
                    "name": profiles[key],
                    "match": {"tls": profiles[key]},
                    "transport_socket": _tls_socket(*key),
                }
            )
        by_upstream[up.id] = profiles[key]
    matches.append(
        {
            "name": _PLAINTEXT,
            "match": {},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": typed("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"),
            },
        }
    )
    return by_upstream, matches


def _protocol_options(gw: Gateway, direct: bool) -> Json:
    options = typed(_HTTP_OPTIONS, explicit_http_config={"http_protocol_options": {}})
    if not direct:
        # Per-attempt translation: a retry may land on another provider (DESIGN.md).
        options["http_filters"] = [upstream_ext_proc(gw), upstream_codec()]
    elif traced := direct_trace_filters(gw):
        options["http_filters"] = [*traced, upstream_codec()]  # the gateway's trace context
    return options


def backend_cluster(backend: ResolvedBackend, gw: Gateway, direct: bool) -> Json:
    socket_of, socket_matches = _transport(backend)
    priorities: dict[int, list[Json]] = {}
    for up in backend.upstreams:
        priorities.setdefault(up.priority, []).append(
            {
                "endpoint": {"address": socket_address(up.host, up.port), "hostname": up.authority},
                "metadata": {
                    "filter_metadata": {
                        # A plain string: the upstream phase reads it back from protobuf text.
                        METADATA_NAMESPACE: {"upstream": up.id},
                        _SOCKET_MATCH: {"tls": socket_of[up.id]},
                    }
                },
            }
        )
    return {
        "name": backend.cluster,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
        "circuit_breakers": circuit_breakers(gw.limits.max_connections),
        "load_assignment": {
            "cluster_name": backend.cluster,
            "endpoints": [{"priority": p, "lb_endpoints": eps} for p, eps in sorted(priorities.items())],
        },
        "typed_extension_protocol_options": {_HTTP_OPTIONS: _protocol_options(gw, direct)},
        "transport_socket_matches": socket_matches,
    }


def relay_cluster(backend: ResolvedBackend, gw: Gateway, direct: bool, relay: str) -> Json:
    """The backend's twin for streams (render/routes.py picks it): the same endpoints, priorities
    and metadata, so failover and the upstream phase work unchanged, but every endpoint is the
    stream relay (extproc/stream_relay.py) in plain HTTP/1.1; the relay dials the provider, TLS
    verified, named by the phase in ``x-gw-relay-upstream``. Endpoints share one address; each
    is still its own host to Envoy (its own pool, health, retry predicate)."""
    host, port = split_hostport(relay)
    priorities: dict[int, list[Json]] = {}
    for up in backend.upstreams:
        priorities.setdefault(up.priority, []).append(
            {
                "endpoint": {"address": socket_address(host, port), "hostname": up.authority},
                "metadata": {
                    "filter_metadata": {METADATA_NAMESPACE: {"upstream": up.id, RELAY_METADATA_KEY: "1"}}
                },
            }
        )
    options = _protocol_options(gw, direct)
    # Shorter than the relay's keep-alive (300 s), so Envoy never reuses a connection the relay
    # is closing (a reset before the response: no retry on a single-provider route).
    options["common_http_protocol_options"] = {"idle_timeout": "60s"}
    name = relay_cluster_name(backend.cluster)
    return {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
        "circuit_breakers": circuit_breakers(gw.limits.max_connections),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"priority": p, "lb_endpoints": eps} for p, eps in sorted(priorities.items())],
        },
        "typed_extension_protocol_options": {_HTTP_OPTIONS: options},
    }
