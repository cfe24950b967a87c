"""Routes and virtual hosts: matches, CORS, timeouts, host rewrite, retries (failover)."""

from __future__ import annotations

from extproc.config.model import Cors, RouteMatch, parse_duration
from extproc.gateway import Gateway, ResolvedRoute
from extproc.headers import RELAY
from extproc.render import answer_log, ratelimit
from extproc.render.common import Json, relay_cluster_name, seconds, typed
from extproc.render.filters import CORS, EXT_AUTHZ, authz_per_route


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
    return typed("envoy.extensions.filters.http.cors.v3.CorsPolicy", **policy)


def _retry_policy(route: ResolvedRoute) -> Json | None:
    """Failover: each retry goes to a provider group (priority level) not tried yet.

    How many retries may run at once across the cluster is the cluster's circuit breaker
    (clusters.py), deliberately not Envoy's default of 3."""
    attempts = route.retry_attempts
    if attempts <= 1:
        return None
    policy: Json = {
        "retry_on": "retriable-status-codes,connect-failure,refused-stream,reset",
        "retriable_status_codes": route.retry_codes,
        "num_retries": attempts - 1,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": typed(
                "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                update_frequency=1,
            ),
        },
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
    }
    if route.policies.retry and route.policies.retry.backoff is not None:
        base = parse_duration(route.policies.retry.backoff)
        policy["retry_back_off"] = {"base_interval": seconds(base), "max_interval": seconds(base * 10)}
    per_try = route.per_try_timeout_seconds()
    if per_try:
        policy["per_try_timeout"] = seconds(per_try)
    return policy


def _route_action(route: ResolvedRoute, gw: Gateway, relay: bool = False) -> Json:
    request = route.timeout_seconds(gw.request_timeout)
    action: Json = {"timeout": seconds(request)}
    # Backstop for the stream limits (README, "Stream timeouts"): the router phase ends a stalled
    # stream with an error event at streamIdleTimeout, and gives each stream its own route timeout
    # (streamMaxDuration, by x-envoy-upstream-rq-timeout-ms); Envoy's idle timer fires only when
    # the sidecar could not, a sidecar timeout later, and never before a non-streamed answer's
    # requestTimeout.
    idle, _ = route.stream_limits(gw)
    action["idle_timeout"] = seconds(max(request, idle) + gw.sidecar_timeout)
    # The provider's own host unless urlRewrite.authority names another.
    if route.host_rewrite is not None:
        action["host_rewrite_literal"] = route.host_rewrite
    else:
        action["auto_host_rewrite"] = True

    def cluster(name: str) -> str:
        return relay_cluster_name(name) if relay else name

    if len(route.backends) == 1:
        action["cluster"] = cluster(route.backends[0].cluster)
    else:
        action["weighted_clusters"] = {
            "clusters": [{"name": cluster(b.cluster), "weight": b.weight} for b in route.backends],
        }
    retry = _retry_policy(route)
    if retry:
        action["retry_policy"] = retry
    return action


def _envoy_routes(route: ResolvedRoute, gw: Gateway) -> list[Json]:
    """One Envoy route per match, named by the route id (``#<n>`` after the first).

    Each entry is built afresh: shared dicts would be dumped as YAML aliases."""
    out = []
    for i, match in enumerate(route.matches or [RouteMatch()]):
        out.append(_envoy_route(route, gw, _envoy_match(match), route.id if i == 0 else f"{route.id}#{i}"))
    return out


def _relay_twins(route: ResolvedRoute, gw: Gateway) -> list[Json]:
    """With ``limits.streamRelay``, each Envoy route has a relay twin (``<name>#relay``) to the
    backends' relay clusters (clusters.py). The router phase picks it for a stream by setting
    ``x-gw-relay: <name>`` and having Envoy match again (clear_route_cache). The twins match on
    that header alone, and come first in their virtual host: by then the router phase may have
    rewritten ``:path`` to the provider's (single-provider routes), which no route's own match
    would take. No client can send the header (it is removed at the listener), and the twin
    removes it before the provider leg."""
    out = []
    for i, _ in enumerate(route.matches or [RouteMatch()]):
        name = route.id if i == 0 else f"{route.id}#{i}"
        match = {"prefix": "/", "headers": [{"name": RELAY, "string_match": {"exact": name}}]}
        twin = _envoy_route(route, gw, match, f"{name}#relay", relay=True)
        # (x-forwarded-proto: kept by the router phase for this match, see pipeline/router.py)
        twin["request_headers_to_remove"] = [RELAY, "x-forwarded-proto"]
        out.append(twin)
    return out


def _envoy_route(route: ResolvedRoute, gw: Gateway, match: Json, name: str, relay: bool = False) -> Json:
    per_filter: Json = {EXT_AUTHZ: authz_per_route(route, gw)}
    if route.policies.cors:
        per_filter[CORS] = _cors_policy(route.policies.cors)
    limit = ratelimit.per_route(route)
    if limit is not None:
        per_filter[ratelimit.LOCAL_RATELIMIT] = limit
    return {
        "name": name,
        "match": match,
        "route": _route_action(route, gw, relay),
        "typed_per_filter_config": per_filter,
    }


def virtual_hosts(gw: Gateway, port: int, stat_prefix: str) -> list[Json]:
    """One virtual host per listener hostname on this port (listeners without one share ``*``).

    Envoy picks the most specific domain (exact, then ``*.suffix``, then ``*``), so the order of
    listeners does not matter; within a host, routes keep the config's order. Anything no route
    matches is a JSON 404 (the local reply mapper formats the NR reply)."""
    hosts: dict[str, list[Json]] = {}
    twins: dict[str, list[Json]] = {}
    for route in gw.routes:
        if route.port == port:
            hosts.setdefault(route.hostname or "*", []).extend(_envoy_routes(route, gw))
            if gw.limits.stream_relay:
                twins.setdefault(route.hostname or "*", []).extend(_relay_twins(route, gw))
    hosts = {domain: [*twins.get(domain, []), *routes] for domain, routes in hosts.items()}
    return [
        {
            "name": stat_prefix if domain == "*" else domain,
            "domains": [domain],
            "routes": routes,
            # Envoy's own note of the client address (use_remote_address): for Envoy, not for
            # providers. The sidecars cannot remove an x-envoy- header (Envoy's mutation rules).
            "request_headers_to_remove": ["x-envoy-external-address"],
            # Answers left to the access log never reach the sidecar, which sets it on the others.
            **({"response_headers_to_add": [answer_log.request_id_header()]} if answer_log.used(gw) else {}),
        }
        for domain, routes in hosts.items()
    ]
