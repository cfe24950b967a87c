"""The HTTP filters of the gateway listener and of the per-attempt upstream chain.

Their order and the reasons for it are in envoy/README.md.
"""

from __future__ import annotations

from typing import Any

from extproc.gateway import Gateway, ResolvedRoute
from extproc.headers import (
    AUTHZ_NAMESPACE,
    AUTHZ_ROUTE_KEY,
    CLIENT_REQUEST_ID,
    METADATA_NAMESPACE,
    REQUEST_FACTS,
)
from extproc.render import answer_log, tracing
from extproc.render.common import AUTHZ_CLUSTER, EXTPROC_CLUSTER, Json, seconds, typed

EXT_PROC = "envoy.filters.http.ext_proc"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
CORS = "envoy.filters.http.cors"

# What the router phase reads besides headers and body. Request side: the Envoy route name, which
# is the gateway route id (``#<n>`` for a route's later matches). Response side, at response
# headers: whether the answer is the upstream's or Envoy's own (``via_upstream`` or a local
# reply's details), which endpoint answered (its metadata names the provider), and how many
# attempts it took (failover). Names as in Envoy's attribute docs (arch_overview/advanced/attributes).
ROUTER_REQUEST_ATTRIBUTES = ("xds.route_name",)
ROUTER_RESPONSE_ATTRIBUTES = (
    "response.code_details",
    "xds.upstream_host_metadata",
    "upstream.request_attempt_count",
)
UPSTREAM_REQUEST_ATTRIBUTES = ("xds.upstream_host_metadata",)

# Header prefixes no client may send. ``x-envoy-`` steers Envoy itself (timeouts, retries,
# routing) for any request it classifies as internal, and ``x-gw-`` is the gateway's own
# (identity from authz, phase hand-offs; extproc/headers.py). By prefix, so a header added
# later is covered without anyone remembering to list it.
CLIENT_FORBIDDEN_PREFIXES = ("x-envoy-", "x-gw-")


def _ext_proc(gw: Gateway, phase: str, **settings: Any) -> Json:
    """The ext_proc filter of one phase; the sidecar tells phases apart by ``x-gw-phase``."""
    timeout = gw.sidecar_timeout
    return {
        "name": EXT_PROC,
        "typed_config": typed(
            "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            grpc_service={
                "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
                "timeout": seconds(timeout),
                "initial_metadata": [{"key": "x-gw-phase", "value": phase}],
            },
            failure_mode_allow=False,
            status_on_error={"code": 503},
            message_timeout=seconds(timeout),
            # Headers must be held (SEND) so the body answer can still set headers. The
            # request headers' answer asks for the response when it needs translating.
            processing_mode={
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
            allow_mode_override=True,
            **settings,
        ),
    }


def router_ext_proc(gw: Gateway) -> Json:
    return _ext_proc(
        gw,
        "router",
        request_attributes=list(ROUTER_REQUEST_ATTRIBUTES),
        response_attributes=list(ROUTER_RESPONSE_ATTRIBUTES),
        # The identity authz established reaches the router phase in authz's own namespace.
        metadata_options={
            "receiving_namespaces": {"untyped": [METADATA_NAMESPACE]},
            # With answersFromAccessLog, the request's stream flag too (render/answer_log.py).
            "forwarding_namespaces": {
                "untyped": [AUTHZ_NAMESPACE, *([REQUEST_FACTS] if answer_log.used(gw) else [])]
            },
        },
        # On single-provider routes this phase also sets :path and credentials, and on streams
        # x-envoy-upstream-rq-timeout-ms (their route timeout: streamMaxDuration). Clients cannot
        # send x-envoy- headers (early header mutation), so only the sidecar sets it.
        mutation_rules={"disallow_is_error": False, "allow_all_routing": True, "allow_envoy": True},
    )


def upstream_ext_proc(gw: Gateway) -> Json:
    return _ext_proc(
        gw,
        "upstream",
        request_attributes=[*UPSTREAM_REQUEST_ATTRIBUTES, *tracing.upstream_attributes(gw)],
        # What the router phase decided, for every attempt (headers do not survive retries).
        metadata_options={"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]}},
        # The upstream phase sets :path per attempt; host comes from the route's host rewrite.
        mutation_rules={"allow_all_routing": True},
    )


def upstream_codec() -> Json:
    return {
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": typed("envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"),
    }


def ext_authz(gw: Gateway) -> Json:
    """In the chain for every route, switched off per route unless the route needs it
    (``authz_per_route``): a route added without that switch is checked, failing closed."""
    return {
        "name": EXT_AUTHZ,
        "typed_config": typed(
            "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            grpc_service={
                "envoy_grpc": {"cluster_name": AUTHZ_CLUSTER},
                "timeout": seconds(gw.sidecar_timeout),
            },
            transport_api_version="V3",
            failure_mode_allow=False,
            # A down authz sidecar is a 503 (fail closed), not a 403 that blames the client.
            status_on_error={"code": 503},
            include_peer_certificate=True,
        ),
    }


def authz_per_route(route: ResolvedRoute, gw: Gateway) -> Json:
    """Only routes with an auth policy pay for the authz call.

    The check names the gateway route (the sidecar picks its policies by it) and carries the
    whole body (the buffer filter before it has read it): model entitlements, CEL over
    ``llm.model``, OPA's ``parsed_body`` and OpenFGA's model check all need it."""
    kind = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
    if not route.needs_authz:
        return typed(kind, disabled=True)
    return typed(
        kind,
        check_settings={
            "context_extensions": {AUTHZ_ROUTE_KEY: route.id},
            "with_request_body": {
                "max_request_bytes": gw.limits.max_request_bytes,
                "allow_partial_message": False,
                "pack_as_bytes": True,
            },
        },
    )


def cors() -> Json:
    return {"name": CORS, "typed_config": typed("envoy.extensions.filters.http.cors.v3.Cors")}


def body_limit(gw: Gateway) -> Json:
    """Reads the whole request body before authz: over ``maxRequestBytes`` it is a 413 at once.

    Without it, a chunked body that passes the limit while ext_authz is still deciding
    leaves the downstream read-disabled, and the request hangs until the client gives up."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": typed(
            "envoy.extensions.filters.http.buffer.v3.Buffer", max_request_bytes=gw.limits.max_request_bytes
        ),
    }


def router() -> Json:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": typed("envoy.extensions.filters.http.router.v3.Router", suppress_envoy_headers=True),
    }


def gateway_chain(gw: Gateway) -> list[Json]:
    # Envoy's local_ratelimit only when a route's limit is Envoy's to enforce (render/ratelimit.py).
    from extproc.render import ratelimit

    limit = [ratelimit.chain_filter()] if ratelimit.used(gw) else []
    facts = [answer_log.facts_filter()] if answer_log.used(gw) else []
    return [cors(), body_limit(gw), ext_authz(gw), *limit, *facts, router_ext_proc(gw), router()]


def early_header_mutations() -> list[Json]:
    """Removes the forbidden prefixes as soon as the request headers are parsed: before Envoy
    classifies the request as internal or not, before routing, before any filter or sidecar.

    Then the client's x-request-id is copied to ``x-gw-client-request-id`` (after the removal, so
    only this copy can set it): Envoy replaces x-request-id with its own next (listeners.py,
    ``client_trust``), and the usage record and access log still show what the client sent."""
    copy_client_id = {
        "append": {
            "header": {"key": CLIENT_REQUEST_ID, "value": "%REQ(x-request-id)%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    }
    return [
        {
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": typed(
                "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                mutations=[
                    *(
                        {"remove_on_match": {"key_matcher": {"prefix": prefix, "ignore_case": True}}}
                        for prefix in CLIENT_FORBIDDEN_PREFIXES
                    ),
                    copy_client_id,
                ],
            ),
        }
    ]
