"""The gateway config resolved into what Envoy and the sidecars act on.

Envoy's config and the sidecars are both derived from this one view, so the ids
Envoy carries (route names, endpoint metadata) always mean the same thing to
the sidecars that read them. Ids come from names, never from list positions:
a route's id is its name (``route_id``), an endpoint's is ``<route id>/<provider
name>``. During a reload, when Envoy and a sidecar briefly hold different
configs, an id either means the same route on both sides or is unknown (a 404),
never another route.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from extproc.config.model import (
    DEFAULT_RETRY_CODES,
    AIBackend,
    BackendTLS,
    GatewayConfig,
    NamedProvider,
    Route,
    RouteMatch,
    RoutePolicies,
    RouteType,
    parse_duration,
    route_id,
)

# Each provider's public endpoint; hostOverride replaces it (plain HTTP unless backendTLS).
_DEFAULT_HOSTS: dict[str, str] = {
    "openai": "api.openai.com:443",
    "anthropic": "api.anthropic.com:443",
    "gemini": "generativelanguage.googleapis.com:443",
}

# OpenTelemetry GenAI provider names (gen_ai.provider.name).
GENAI_PROVIDER_NAME: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
}

# Where the secret goes, per provider kind, when the key is a plain API key.
KEY_HEADER: dict[str, tuple[str, str]] = {
    "openai": ("authorization", "Bearer "),
    "anthropic": ("x-api-key", ""),
    "gemini": ("x-goog-api-key", ""),
    "vertex": ("authorization", "Bearer "),
    "bedrock": ("authorization", "Bearer "),
    "azure": ("api-key", ""),
}


def default_host(named: NamedProvider) -> str:
    kind = named.provider.kind
    s = named.provider.settings
    if kind in _DEFAULT_HOSTS:
        return _DEFAULT_HOSTS[kind]
    if kind == "vertex":
        return (
            "aiplatform.googleapis.com:443"
            if s.region == "global"
            else f"{s.region}-aiplatform.googleapis.com:443"
        )
    if kind == "bedrock":
        return f"bedrock-runtime.{s.region}.amazonaws.com:443"
    if kind == "azure":
        if not s.resource_name:
            raise ValueError("azure needs resourceName or a hostOverride")
        return f"{s.resource_name}.openai.azure.com:443"
    raise ValueError(f"unknown provider kind {kind}")


def resolve_secret(value: str | None) -> tuple[str | None, str | None]:
    """``$NAME`` or ``${NAME}`` reads the environment; returns (secret, missing variable name)."""
    if value is None:
        return None, None
    if value.startswith("$"):
        name = value[1:].strip("{}")
        secret = os.environ.get(name)
        return (secret, None) if secret else (None, name)
    return value, None


@dataclass(frozen=True)
class Upstream:
    """One provider endpoint: an Envoy endpoint in some priority level of a backend cluster."""

    id: str  # "<route id>/<provider name>": the endpoint metadata the upstream phase reads back
    name: str
    kind: str
    settings: Any
    host: str
    port: int
    tls: bool
    sni: str | None
    insecure_skip_verify: bool
    priority: int
    path_override: str | None
    path_prefix: str | None
    routes: dict[str, RouteType] | None
    auth_ref: str | None  # the config's literal or $ENV reference, never logged resolved

    @property
    def model(self) -> str | None:
        return self.settings.model

    @property
    def authority(self) -> str:
        return self.host if self.port in (80, 443) else f"{self.host}:{self.port}"

    def secret(self) -> tuple[str | None, str | None]:
        return resolve_secret(self.auth_ref)


@dataclass(frozen=True)
class ResolvedBackend:
    cluster: str
    weight: int
    upstreams: list[Upstream]
    ai: AIBackend


@dataclass(frozen=True)
class ResolvedRoute:
    id: str  # the Envoy route name (``#<n>`` appended for its second and later matches)
    name: str
    port: int
    hostname: str | None  # the listener's: Envoy serves the route only for this host (None: any)
    matches: list[RouteMatch]
    policies: RoutePolicies
    backends: list[ResolvedBackend]
    source: Route

    @property
    def retry_attempts(self) -> int:
        if self.policies.retry:
            return self.policies.retry.attempts
        # Several priority groups mean failover: one attempt per group.
        return max(len({u.priority for u in b.upstreams}) for b in self.backends)

    @property
    def retry_codes(self) -> list[int]:
        return self.policies.retry.codes if self.policies.retry else list(DEFAULT_RETRY_CODES)

    @property
    def host_rewrite(self) -> str | None:
        """``urlRewrite.authority``: the Host every attempt sends instead of the provider's own."""
        rewrite = self.policies.url_rewrite
        return rewrite.authority.value if rewrite and rewrite.authority else None

    @property
    def needs_authz(self) -> bool:
        """Whether Envoy asks the authz sidecar before this route: only when it has an auth
        policy, so an open route pays nothing for it; a route with one fails closed."""
        return self.policies.has_auth

    def timeout_seconds(self, default: float) -> float:
        t = self.policies.timeout
        if t and t.request_timeout is not None:
            return parse_duration(t.request_timeout)
        return default

    def stream_limits(self, gw: Gateway) -> tuple[float, float]:
        """(idle, maximum) seconds for this route's streams: its timeout policy, else config.limits."""
        t = self.policies.timeout
        idle = (
            t.stream_idle_timeout
            if t and t.stream_idle_timeout is not None
            else gw.limits.stream_idle_timeout
        )
        most = (
            t.stream_max_duration
            if t and t.stream_max_duration is not None
            else gw.limits.stream_max_duration
        )
        return parse_duration(idle), parse_duration(most)

    def per_try_timeout_seconds(self) -> float | None:
        t = self.policies.timeout
        if t and t.backend_request_timeout is not None:
            return parse_duration(t.backend_request_timeout)
        return None

    @property
    def direct_upstream(self) -> Upstream | None:
        """The route's only possible upstream, if it has just one.

        Then no retry can land on another wire format, so the router phase does
        the egress work itself and the cluster runs no per-attempt ext_proc: one
        gRPC stream per request fewer (measured: a stream costs about twice a message).
        """
        if len(self.backends) == 1 and len(self.backends[0].upstreams) == 1:
            return self.backends[0].upstreams[0]
        return None

    def models(self) -> list[tuple[str, Upstream]]:
        """Models this route serves, for ``GET /v1/models``."""
        seen: dict[str, Upstream] = {}
        for b in self.backends:
            for u in b.upstreams:
                if u.model and u.model not in seen:
                    seen[u.model] = u
        return list(seen.items())


@dataclass
class Gateway:
    config: GatewayConfig
    routes: list[ResolvedRoute] = field(default_factory=list)
    routes_by_id: dict[str, ResolvedRoute] = field(default_factory=dict)
    upstreams_by_id: dict[str, Upstream] = field(default_factory=dict)

    @property
    def limits(self) -> Any:
        return self.config.config.limits

    @property
    def request_timeout(self) -> float:
        return parse_duration(self.limits.request_timeout)

    @property
    def sidecar_timeout(self) -> float:
        return parse_duration(self.limits.sidecar_timeout)

    def limit_seconds(self, name: str) -> float:
        """A duration of ``config.limits`` by its field name (``upload_timeout``), in seconds."""
        return parse_duration(getattr(self.limits, name))


def _split_host(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _upstream(
    uid: str, named: NamedProvider, priority: int, route: RoutePolicies, backend: AIBackend
) -> Upstream:
    override = named.host_override
    host, port = _split_host(override or default_host(named))
    # The nearest backendTLS wins: the provider's, its backend's, then the route's.
    tls_policy: BackendTLS | None = (
        (named.policies and named.policies.backend_tls)
        or (backend.policies and backend.policies.backend_tls)
        or route.backend_tls
    )
    auth = (
        named.backend_auth
        or (named.policies and named.policies.backend_auth)
        or (backend.policies and backend.policies.backend_auth)
        or route.backend_auth
    )
    return Upstream(
        id=uid,
        name=named.name,
        kind=named.provider.kind,
        settings=named.provider.settings,
        host=host,
        port=port,
        tls=override is None or tls_policy is not None,
        sni=(tls_policy.sni if tls_policy else None) or host,
        insecure_skip_verify=bool(tls_policy and tls_policy.insecure_skip_verify),
        priority=priority,
        path_override=named.path_override,
        path_prefix=named.path_prefix,
        routes=named.routes or backend.routes,
        auth_ref=auth.key if auth else None,
    )


def _cluster_name(rid: str, route: Route, index: int) -> str:
    """``<route id>/<backend name>``, or ``/backend<n>`` for an unnamed or twice-used name.

    Envoy's alone (no sidecar reads it): it names the backend in Envoy's stats and /metrics."""
    name = route.backends[index].ai.name
    names = [b.ai.name for b in route.backends]
    return f"{rid}/{name}" if name and names.count(name) == 1 else f"{rid}/backend{index}"


def build(config: GatewayConfig) -> Gateway:
    """Resolve a validated config (names unique and well formed: ``semantic_problems``)."""
    gw = Gateway(config=config)
    for bind in config.binds:
        for listener in bind.listeners:
            for route in listener.routes:
                rid = route_id(route, bind.port, listener.hostname)
                policies = route.policies or RoutePolicies()
                backends = []
                for bki, backend in enumerate(route.backends):
                    ups = []
                    for gi, group in enumerate(backend.ai.provider_groups()):
                        for named in group:
                            # Provider names are unique per route and hold no "/": ids cannot collide.
                            uid = f"{rid}/{named.name}"
                            up = _upstream(uid, named, gi, policies, backend.ai)
                            ups.append(up)
                            gw.upstreams_by_id[uid] = up
                    backends.append(
                        ResolvedBackend(_cluster_name(rid, route, bki), backend.weight, ups, backend.ai)
                    )
                resolved = ResolvedRoute(
                    id=rid,
                    name=route.name or rid,
                    port=bind.port,
                    hostname=listener.hostname,
                    matches=route.matches,
                    policies=policies,
                    backends=backends,
                    source=route,
                )
                gw.routes.append(resolved)
                gw.routes_by_id[rid] = resolved
    return gw
