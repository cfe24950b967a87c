"""Render Envoy's bootstrap from the resolved gateway config.

Layout (see DESIGN.md):
- one listener per bind: ext_authz -> router-level ext_proc -> router;
- one cluster per route backend; each provider group is a priority level, so a
  retry moves to the next group (``previous_priorities``) and a 429/5xx/refused
  primary fails over to the secondary;
- every backend cluster runs the upstream-level ext_proc once per attempt, which
  translates for the endpoint Envoy picked (named by its endpoint metadata);
- Envoy's own errors (no route, connect failure, timeout, body too large) are
  turned into the client API's error JSON by ``local_reply_config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from extproc.config.model import Cors, RouteMatch, parse_duration
from extproc.gateway import Gateway, ResolvedBackend, ResolvedRoute
from extproc.headers import API, INTERNAL_HEADERS, METADATA_NAMESPACE
from extproc.translate import messages_common
from extproc.translate.base import openai_error_type

Json = dict[str, Any]

_T = "type.googleapis.com/"
EXTPROC_CLUSTER = "gw_extproc"
AUTHZ_CLUSTER = "gw_authz"
ADMIN_CLUSTER = "gw_admin"


@dataclass(frozen=True)
class SidecarAddresses:
    extproc: str = "127.0.0.1:9001"
    authz: str = "127.0.0.1:9002"
    listen_host: str = "0.0.0.0"
    admin_host: str = "127.0.0.1"


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _socket(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def _http2_options() -> Json:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {
                "http2_protocol_options": {
                    "initial_stream_window_size": 1048576,
                    "initial_connection_window_size": 4194304,
                }
            },
        }
    }


def _sidecar_cluster(name: str, address: str, timeout: float) -> Json:
    host, port = _split(address)
    return {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _seconds(min(timeout, 1.0)),
        "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
        "typed_extension_protocol_options": _http2_options(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
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


# --- filters -------------------------------------------------------------


def _ext_proc(gw: Gateway, phase: str, **settings: Any) -> Json:
    """The ext_proc filter of one phase; the sidecar tells phases apart by ``x-gw-phase``."""
    timeout = gw.sidecar_timeout
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
                "timeout": _seconds(timeout),
                "initial_metadata": [{"key": "x-gw-phase", "value": phase}],
            },
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "message_timeout": _seconds(timeout),
            # Headers must be held (SEND) so the body answer can still set headers. The
            # request headers' answer asks for the response when it needs translating.
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
            "allow_mode_override": True,
            **settings,
        },
    }


def _router_ext_proc(gw: Gateway) -> Json:
    return _ext_proc(
        gw,
        "router",
        request_attributes=["xds.route_name"],
        # Tells an upstream's answer ("via_upstream") from Envoy's own local replies.
        response_attributes=[
            "response.code_details",
            "xds.upstream_host_metadata",
            "upstream.request_attempt_count",
        ],
        metadata_options={"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
        # On single-provider routes this phase also sets :path and credentials.
        mutation_rules={"disallow_is_error": False, "allow_all_routing": True},
    )


def _upstream_ext_proc(gw: Gateway) -> Json:
    return _ext_proc(
        gw,
        "upstream",
        request_attributes=["xds.upstream_host_metadata"],
        # What the router phase decided, for every attempt (headers do not survive retries).
        metadata_options={"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]}},
        # The upstream phase sets :path per attempt; host comes from auto_host_rewrite.
        mutation_rules={"allow_all_routing": True},
    )


def _ext_authz(gw: Gateway) -> Json:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": AUTHZ_CLUSTER},
                "timeout": _seconds(gw.sidecar_timeout),
            },
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            # A down authz sidecar is a 503 (fail closed), not a 403 that blames the client.
            "status_on_error": {"code": 503},
            "include_peer_certificate": True,
        },
    }


def _cors_filter() -> Json:
    return {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": _T + "envoy.extensions.filters.http.cors.v3.Cors"},
    }


def _body_limit_filter(gw: Gateway) -> Json:
    """Reads the whole request body before authz: over ``maxRequestBytes`` it is a 413 at once.

    Without it, a chunked body that passes the limit while ext_authz is still deciding
    leaves the downstream read-disabled, and the request hangs until the client gives up."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": gw.limits.max_request_bytes,
        },
    }


def _router_filter() -> Json:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": True,
        },
    }


# --- errors --------------------------------------------------------------

# The client's path as the router phase recorded it; ``upstream_path`` is :path as it
# left (the provider's), or the client's when the gateway answered before the body.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %DYNAMIC_METADATA(io.llm_gateway:path)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms "
    "route=%ROUTE_NAME% upstream=%UPSTREAM_HOST% upstream_path=%REQ(:PATH)% "
    "attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% id=%REQ(X-REQUEST-ID)%\n"
)

# Envoy's response flags for replies it generates itself (no route, upstream failures...).
_ENVOY_FLAGS = [
    "NR",
    "UF",
    "UH",
    "UT",
    "URX",
    "UO",
    "UC",
    "LR",
    "UMSDR",
    "DPE",
    "UPE",
    "NC",
    "OM",
    "DF",
    "UAEX",
    "RL",
]

# The statuses Envoy's own replies use, each answered in the client API's error type.
_LOCAL_REPLY_STATUSES = (400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504)


def _api_is(api: str, if_unknown: bool) -> Json:
    """The client API the router phase recorded (by now :path may be the provider's)."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": METADATA_NAMESPACE,
                "path": [{"key": API}],
                "value": {"string_match": {"exact": api}},
            },
            "match_if_key_not_found": if_unknown,
        }
    }


def _no_api_and_messages_path() -> Json:
    """Before the router phase ran (sidecar down), the client's path tells its API."""
    return {
        "and_filter": {
            "filters": [
                _api_is("-", True),  # "-" is never recorded: true only when no API was
                {"header_filter": {"header": {"name": ":path", "string_match": {"suffix": "/messages"}}}},
            ]
        }
    }


def _local_reply_config(gw: Gateway) -> Json:
    """Envoy-generated errors as the client API's error JSON (never a text body)."""
    limit = gw.limits.max_request_bytes
    messages = {413: f"the request body is larger than this gateway accepts (at most {limit} bytes)"}
    envoy_made = {
        "or_filter": {
            "filters": [
                {"response_flag_filter": {"flags": _ENVOY_FLAGS}},
                {
                    "status_code_filter": {
                        "comparison": {"op": "EQ", "value": {"default_value": 413, "runtime_key": "gw.413"}}
                    }
                },
                {
                    "status_code_filter": {
                        "comparison": {"op": "EQ", "value": {"default_value": 408, "runtime_key": "gw.408"}}
                    }
                },
            ]
        }
    }
    anthropic_client = {"or_filter": {"filters": [_api_is("messages", False), _no_api_and_messages_path()]}}
    mappers = []
    for status in _LOCAL_REPLY_STATUSES:
        is_status = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": status, "runtime_key": f"gw.status.{status}"},
                }
            }
        }
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [envoy_made, is_status, anthropic_client]}},
                "body_format_override": {
                    "json_format": {
                        "type": "error",
                        "error": {
                            "type": messages_common.error_type(status),
                            "message": messages.get(status, "%LOCAL_REPLY_BODY%"),
                        },
                    },
                    "content_type": "application/json",
                },
            }
        )
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [envoy_made, is_status]}},
                "body_format_override": {
                    "json_format": {
                        "error": {
                            "message": messages.get(status, "%LOCAL_REPLY_BODY%"),
                            "type": openai_error_type(status),
                            "param": None,
                            "code": "%RESPONSE_CODE_DETAILS%",
                        }
                    },
                    "content_type": "application/json",
                },
            }
        )
    # A 503 with no response flag is a sidecar that failed (status_on_error): the
    # gateway's own immediate responses never use 503, and provider 503s are not local replies.
    sidecar_down = {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": 503, "runtime_key": "gw.sidecar"}}
        }
    }
    message = "the gateway is unavailable: a sidecar did not answer (%RESPONSE_CODE_DETAILS%)"
    mappers.append(
        {
            "filter": {"and_filter": {"filters": [sidecar_down, anthropic_client]}},
            "body_format_override": {
                "json_format": {"type": "error", "error": {"type": "overloaded_error", "message": message}},
                "content_type": "application/json",
            },
        }
    )
    mappers.append(
        {
            "filter": sidecar_down,
            "body_format_override": {
                "json_format": {
                    "error": {
                        "message": message,
                        "type": "service_unavailable",
                        "param": None,
                        "code": "gateway_unavailable",
                    }
                },
                "content_type": "application/json",
            },
        }
    )
    # Any other Envoy-made status still gets JSON.
    mappers.append(
        {
            "filter": envoy_made,
            "body_format_override": {
                "json_format": {
                    "error": {
                        "message": "%LOCAL_REPLY_BODY%",
                        "type": "server_error",
                        "param": None,
                        "code": "%RESPONSE_CODE_DETAILS%",
                    }
                },
                "content_type": "application/json",
            },
        }
    )
    return {"mappers": mappers}


# --- routes --------------------------------------------------------------


def _envoy_matches(route: ResolvedRoute) -> list[Json]:
    matches = route.matches or [RouteMatch()]
    return [_envoy_match(m) for m in matches]


def _envoy_match(m: RouteMatch) -> Json:
    out: Json = {}
    if m.path is None or m.path.path_prefix is not None:
        prefix = m.path.path_prefix if m.path else "/"
        if prefix in ("", "/"):
            out["prefix"] = "/"
        else:
            out["path_separated_prefix"] = prefix.rstrip("/")
    elif m.path.exact is not None:
        out["path"] = m.path.exact
    else:
        out["safe_regex"] = {"regex": m.path.regex}
    headers = [_string_header(h.name, h.value.exact, h.value.regex) for h in m.headers]
    if m.method:
        headers.append(_string_header(":method", m.method.upper(), None))
    if headers:
        out["headers"] = headers
    if m.query:
        out["query_parameters"] = [
            {
                "name": q.name,
                "string_match": {"exact": q.value.exact}
                if q.value.exact is not None
                else {"safe_regex": {"regex": q.value.regex}},
            }
            for q in m.query
        ]
    return out


def _string_header(name: str, exact: str | None, regex: str | None) -> Json:
    match = {"exact": exact} if exact is not None else {"safe_regex": {"regex": regex}}
    return {"name": name, "string_match": match}


def _cors_policy(cors: Cors) -> Json:
    policy: Json = {
        "allow_origin_string_match": [
            {"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o} for o in cors.allow_origins
        ],
        "allow_credentials": cors.allow_credentials,
    }
    if cors.allow_headers:
        policy["allow_headers"] = ",".join(cors.allow_headers)
    if cors.allow_methods:
        policy["allow_methods"] = ",".join(cors.allow_methods)
    if cors.expose_headers:
        policy["expose_headers"] = ",".join(cors.expose_headers)
    if cors.max_age is not None:
        policy["max_age"] = str(int(parse_duration(cors.max_age)))
    return {"@type": _T + "envoy.extensions.filters.http.cors.v3.CorsPolicy", **policy}


def _retry_policy(route: ResolvedRoute) -> Json | None:
    attempts = route.retry_attempts
    if attempts <= 1:
        return None
    policy: Json = {
        "retry_on": "retriable-status-codes,connect-failure,refused-stream,reset",
        "retriable_status_codes": route.retry_codes,
        "num_retries": attempts - 1,
        # Each retry goes to a priority (provider group) not tried yet: that is failover.
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": _T
                + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
    }
    if route.policies.retry and route.policies.retry.backoff is not None:
        base = parse_duration(route.policies.retry.backoff)
        policy["retry_back_off"] = {"base_interval": _seconds(base), "max_interval": _seconds(base * 10)}
    per_try = route.per_try_timeout_seconds()
    if per_try:
        policy["per_try_timeout"] = _seconds(per_try)
    return policy


def _route_action(route: ResolvedRoute, gw: Gateway) -> Json:
    action: Json = {
        "timeout": _seconds(route.timeout_seconds(gw.request_timeout)),
        "auto_host_rewrite": True,
    }
    if len(route.backends) == 1:
        action["cluster"] = route.backends[0].cluster
    else:
        action["weighted_clusters"] = {
            "clusters": [{"name": b.cluster, "weight": b.weight} for b in route.backends],
        }
    retry = _retry_policy(route)
    if retry:
        action["retry_policy"] = retry
    return action


def _routes(gw: Gateway, port: int) -> list[Json]:
    out: list[Json] = []
    for route in gw.routes:
        if route.port != port:
            continue
        per_filter: Json = {}
        if route.policies.cors:
            per_filter["envoy.filters.http.cors"] = _cors_policy(route.policies.cors)
        for i, match in enumerate(_envoy_matches(route)):
            entry: Json = {
                "name": route.id if i == 0 else f"{route.id}#{i}",
                "match": match,
                "route": _route_action(route, gw),
            }
            if per_filter:
                entry["typed_per_filter_config"] = per_filter
            out.append(entry)
    # Anything else: a JSON 404 (the local reply mapper formats the NR reply).
    return out


# --- clusters ------------------------------------------------------------


def _upstream_protocol(gw: Gateway, backend: ResolvedBackend, direct: bool) -> Json:
    options: Json = {
        "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
    }
    if not direct:
        # Per-attempt translation: a retry may land on another provider (DESIGN.md).
        options["http_filters"] = [
            _upstream_ext_proc(gw),
            {
                "name": "envoy.filters.http.upstream_codec",
                "typed_config": {
                    "@type": _T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                },
            },
        ]
    return options


def _backend_cluster(backend: ResolvedBackend, gw: Gateway, direct: bool) -> Json:
    priorities: dict[int, list[Json]] = {}
    for up in backend.upstreams:
        priorities.setdefault(up.priority, []).append(
            {
                "endpoint": {
                    "address": _socket(up.host, up.port),
                    "hostname": up.authority,
                },
                "metadata": {
                    "filter_metadata": {
                        METADATA_NAMESPACE: {"upstream": up.id},
                        "envoy.transport_socket_match": {"tls": up.tls},
                    }
                },
            }
        )
    tls_sni = next((u.sni for u in backend.upstreams if u.tls), None)
    cluster: Json = {
        "name": backend.cluster,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
        "load_assignment": {
            "cluster_name": backend.cluster,
            "endpoints": [{"priority": p, "lb_endpoints": eps} for p, eps in sorted(priorities.items())],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _upstream_protocol(gw, backend, direct)
        },
        "transport_socket_matches": [
            {
                "name": "tls",
                "match": {"tls": True},
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": tls_sni or "",
                        "auto_host_sni": True,
                        "common_tls_context": {
                            "validation_context": {
                                "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}
                            }
                        },
                    },
                },
            },
            {
                "name": "plaintext",
                "match": {},
                "transport_socket": {
                    "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                    },
                },
            },
        ],
    }
    return cluster


def _admin_cluster(admin_host: str, admin_port: int) -> Json:
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(admin_host, admin_port)}}]}],
        },
    }


# --- listeners -----------------------------------------------------------


def _hcm(stat_prefix: str, routes: list[Json], filters: list[Json], extra: Json | None = None) -> Json:
    hcm: Json = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
        },
        "http_filters": filters,
    }
    hcm.update(extra or {})
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _gateway_listener(gw: Gateway, port: int, host: str) -> Json:
    limits = gw.limits
    filters = [_cors_filter(), _body_limit_filter(gw), _ext_authz(gw), _router_ext_proc(gw), _router_filter()]
    extra: Json = {
        "local_reply_config": _local_reply_config(gw),
        "request_timeout": "0s",
        "stream_idle_timeout": _seconds(max(gw.request_timeout, 300.0)),
        # Clients cannot send the headers the gateway uses internally.
        "early_header_mutation_extensions": [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": _T
                    + "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                    "mutations": [{"remove": name} for name in INTERNAL_HEADERS],
                },
            }
        ],
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": _T + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ],
    }
    return {
        "name": f"bind_{port}",
        "address": _socket(host, port),
        "per_connection_buffer_limit_bytes": limits.max_request_bytes,
        "filter_chains": [{"filters": [_hcm(f"bind_{port}", _routes(gw, port), filters, extra)]}],
    }


def _readiness_listener(gw: Gateway, host: str) -> Json:
    port = gw.config.config.readiness_port
    health = {
        "name": "envoy.filters.http.health_check",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.health_check.v3.HealthCheck",
            "pass_through_mode": False,
            "headers": [{"name": ":path", "string_match": {"exact": "/ready"}}],
            # Ready only when Envoy is up and both sidecars pass their gRPC health checks.
            "cluster_min_healthy_percentages": {
                EXTPROC_CLUSTER: {"value": 100},
                AUTHZ_CLUSTER: {"value": 100},
            },
        },
    }
    routes = [
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}},
        }
    ]
    return {
        "name": "readiness",
        "address": _socket(host, port),
        "filter_chains": [{"filters": [_hcm("readiness", routes, [health, _router_filter()])]}],
    }


def _metrics_listener(gw: Gateway, host: str) -> Json:
    port = gw.config.config.metrics_port
    routes = [
        {
            "match": {"path": "/metrics"},
            "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": "/stats/prometheus"},
        },
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}},
        },
    ]
    return {
        "name": "metrics",
        "address": _socket(host, port),
        "filter_chains": [{"filters": [_hcm("metrics", routes, [_router_filter()])]}],
    }


def render(gw: Gateway, addrs: SidecarAddresses | None = None) -> Json:
    """The whole Envoy bootstrap as a dict (dump it as YAML or JSON)."""
    addrs = addrs or SidecarAddresses()
    admin_port = gw.config.config.admin_port
    ports = sorted({b.port for b in gw.config.binds})
    clusters = [
        _sidecar_cluster(EXTPROC_CLUSTER, addrs.extproc, gw.sidecar_timeout),
        _sidecar_cluster(AUTHZ_CLUSTER, addrs.authz, gw.sidecar_timeout),
        _admin_cluster(addrs.admin_host if addrs.admin_host != "0.0.0.0" else "127.0.0.1", admin_port),
    ]
    clusters += [
        _backend_cluster(b, gw, direct=r.direct_upstream is not None) for r in gw.routes for b in r.backends
    ]
    listeners = [_gateway_listener(gw, p, addrs.listen_host) for p in ports]
    listeners += [_readiness_listener(gw, addrs.listen_host), _metrics_listener(gw, addrs.listen_host)]
    return {
        "node": {"id": "llm-gateway", "cluster": "llm-gateway"},
        "admin": {"address": _socket(addrs.admin_host, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {"overload": {"global_downstream_max_connections": 50000}},
                }
            ]
        },
    }
