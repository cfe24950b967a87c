"""The gateway config: agentgateway's standalone YAML shape.

``binds -> listeners -> routes -> backends.ai / policies``. Every model forbids
unknown fields, so a typo or an unsupported feature is a load error naming the
field instead of being silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import Field, field_validator

# The parts live in their own modules; callers import the whole config model from here.
from extproc.config.ai import AIPolicy, RouteType
from extproc.config.base import (
    _HOSTNAME,
    DEFAULT_RETRY_CODES,
    Duration,
    Loc,
    Strict,
    check_name,
    parse_duration,
)
from extproc.config.ledger import AdminApiConfig, LedgerConfig
from extproc.config.ledger import problems as ledger_problems
from extproc.config.matches import RouteMatch
from extproc.config.policies import BackendTLS, Cors, Retry, RoutePolicies
from extproc.config.providers import AIBackend, Backend, NamedProvider
from extproc.config.ratelimit import RateLimitStore
from extproc.config.telemetry import CostConfig, LoggingConfig, MetricsConfig, TracingConfig

__all__ = [
    "DEFAULT_RETRY_CODES",
    "AIBackend",
    "AIPolicy",
    "BackendTLS",
    "Bind",
    "Cors",
    "GatewayConfig",
    "Listener",
    "Loc",
    "NamedProvider",
    "Retry",
    "Route",
    "RouteMatch",
    "RoutePolicies",
    "RouteType",
    "parse_duration",
    "route_id",
]


class Route(Strict):
    name: str | None = None
    matches: list[RouteMatch] = []
    backends: list[Backend] = Field(min_length=1)
    policies: RoutePolicies | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return check_name(v)


def route_id(route: Route, port: int, hostname: str | None) -> str:
    """The id Envoy and the sidecars share for a route: its name, never its position.

    An unnamed route gets ``unnamed-`` and a digest of where it listens and what it matches, so
    adding or moving other routes leaves it alone, and a changed route gets a new id (during a
    reload, the side that does not know it answers 404 instead of serving another route).
    """
    if route.name is not None:
        return route.name
    what = {
        "port": port,
        "hostname": hostname,
        "matches": [m.model_dump(mode="json", by_alias=True, exclude_defaults=True) for m in route.matches],
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"unnamed-{digest}"


class Listener(Strict):
    name: str | None = None
    # Envoy virtual host domains: the listener's routes answer only requests for this host.
    hostname: str | None = None
    protocol: Literal["HTTP"] = "HTTP"
    routes: list[Route] = Field(min_length=1)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is None or v == "*":
            return None  # any host, as when unset
        if not _HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a hostname: use a DNS name, optionally starting with '*.'")
        return v.lower()


class Bind(Strict):
    port: int = Field(ge=1, le=65535)
    listeners: list[Listener] = Field(min_length=1)


class Limits(Strict):
    """Gateway-wide knobs this project adds (agentgateway has no equivalents)."""

    max_request_bytes: int = Field(10 * 1024 * 1024, alias="maxRequestBytes", ge=1024)
    request_timeout: Duration = Field("120s", alias="requestTimeout")
    sidecar_timeout: Duration = Field("5s", alias="sidecarTimeout")
    # Slow clients (README, "Slow and hostile clients"): a client has this long for its request
    # headers, and this long for its whole request (headers and body, up to the provider). Neither
    # bounds the answer: a long stream is not cut by them.
    request_headers_timeout: Duration = Field("10s", alias="requestHeadersTimeout")
    upload_timeout: Duration = Field("60s", alias="uploadTimeout")
    # Downstream connections Envoy accepts at once (all listeners); a connection idle this long is
    # closed. Each backend and sidecar cluster allows as many requests at once.
    max_connections: int = Field(10000, alias="maxConnections", ge=16)
    idle_connection_timeout: Duration = Field("60s", alias="idleConnectionTimeout")
    # Streamed answers (README, "Stream timeouts"): once the provider's headers are in, a stream is
    # bounded by silence between chunks and by its whole length, not by ``requestTimeout``.
    stream_idle_timeout: Duration = Field("300s", alias="streamIdleTimeout")
    stream_max_duration: Duration = Field("1h", alias="streamMaxDuration")
    # Streams' provider leg through the stream relay (extproc/stream_relay.py), so a provider
    # connection cut after the headers (FIN, RST) ends the client's stream with an error event
    # instead of a reset (README, "When a provider cuts a stream").
    stream_relay: bool = Field(True, alias="streamRelay")
    # Whole (not streamed) answers on routes that only observe them skip the sidecar: Envoy reads
    # their usage and sends it with its access log, and the usage record is written from that
    # (README "Answers from Envoy's access log"). One extproc worker only; on by default.
    answers_from_access_log: bool = Field(True, alias="answersFromAccessLog")


# Limits that are durations: each must parse (semantic_problems).
DURATION_LIMITS = (
    "request_timeout",
    "sidecar_timeout",
    "request_headers_timeout",
    "upload_timeout",
    "idle_connection_timeout",
    "stream_idle_timeout",
    "stream_max_duration",
)


class GlobalConfig(Strict):
    admin_port: int = Field(15000, alias="adminPort")
    metrics_port: int = Field(15020, alias="metricsPort")
    readiness_port: int = Field(15021, alias="readinessPort")
    # Proxies in front of the gateway whose X-Forwarded-For entries are trusted: 0 (the default)
    # when clients connect to Envoy directly, so the client address is the connection's and a
    # client's own X-Forwarded-For is never believed. Envoy appends the peer it saw either way.
    xff_num_trusted_hops: int = Field(0, alias="xffNumTrustedHops", ge=0, le=16)
    limits: Limits = Limits()
    # Observability (extproc/config/telemetry.py): agentgateway's metrics/logging/tracing, and prices.
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingConfig | None = None
    cost: CostConfig = CostConfig()
    rate_limit_store: RateLimitStore = Field(RateLimitStore(), alias="rateLimitStore")
    # The usage ledger and the admin API (extproc/config/ledger.py).
    ledger: LedgerConfig = LedgerConfig()
    admin_api: AdminApiConfig | None = Field(None, alias="adminApi")


class GatewayConfig(Strict):
    config: GlobalConfig = GlobalConfig()
    binds: list[Bind] = Field(min_length=1)

    def semantic_problems(self) -> list[tuple[Loc, str]]:
        """Checks that span fields: duplicate ports and names, bad durations."""
        problems: list[tuple[Loc, str]] = []
        ports: set[int] = set()
        ids: dict[str, Loc] = {}
        for bi, bind in enumerate(self.binds):
            if bind.port in ports:
                problems.append((("binds", bi, "port"), f"port {bind.port} is bound twice"))
            ports.add(bind.port)
            for li, listener in enumerate(bind.listeners):
                for ri, route in enumerate(listener.routes):
                    rloc: Loc = ("binds", bi, "listeners", li, "routes", ri)
                    problems += _route_problems(route, rloc)
                    rid = route_id(route, bind.port, listener.hostname)
                    if rid in ids:
                        problems.append(_duplicate_id(route, rid, rloc, ids[rid], bind.port))
                    else:
                        ids[rid] = rloc
        reserved = {self.config.admin_port, self.config.metrics_port, self.config.readiness_port}
        for bi, bind in enumerate(self.binds):
            if bind.port in reserved:
                problems.append(
                    (("binds", bi, "port"), f"port {bind.port} is reserved for admin/metrics/readiness")
                )
        for name in DURATION_LIMITS:
            try:
                parse_duration(getattr(self.config.limits, name))
            except ValueError as exc:
                alias = Limits.model_fields[name].alias or name
                problems.append((("config", "limits", alias), str(exc)))
        try:
            parse_duration(self.config.cost.reload_interval)
        except ValueError as exc:
            problems.append((("config", "cost", "reloadInterval"), str(exc)))
        taken = {b.port: "port of a listener" for b in self.binds}
        taken |= {self.config.admin_port: "adminPort", self.config.metrics_port: "metricsPort"}
        taken[self.config.readiness_port] = "readinessPort"
        problems += ledger_problems(self.config.ledger, self.config.admin_api, taken)
        return problems


def _fmt_loc(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def _duplicate_id(route: Route, rid: str, rloc: Loc, first: Loc, port: int) -> tuple[Loc, str]:
    if route.name is not None:
        message = f"route name {rid!r} is used twice (also at {_fmt_loc(first)}): names must be unique"
        return (*rloc, "name"), message
    return rloc, (
        f"this unnamed route matches the same requests on port {port} as the one at {_fmt_loc(first)}; "
        "give the routes names"
    )


# Endpoint fields of a backend's single-provider form; with groups they belong on each provider.
_PER_PROVIDER = (
    ("host_override", "hostOverride"),
    ("path_override", "pathOverride"),
    ("path_prefix", "pathPrefix"),
)


def _route_problems(route: Route, rloc: Loc) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    names: set[str] = set()
    for bki, backend in enumerate(route.backends):
        if backend.ai.groups is not None:
            for attr, alias in _PER_PROVIDER:
                if getattr(backend.ai, attr) is not None:
                    problems.append(
                        ((*rloc, "backends", bki, "ai", alias), f"with groups, set {alias} on each provider")
                    )
        for gi, group in enumerate(backend.ai.provider_groups()):
            for pi, named in enumerate(group):
                ploc: Loc = (*rloc, "backends", bki, "ai", "groups", gi, "providers", pi, "name")
                if named.name in names:
                    problems.append((ploc, f"provider name {named.name!r} is used twice in this route"))
                names.add(named.name)
                if named.host_override and not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d+$", named.host_override):
                    problems.append(((*ploc[:-1], "hostOverride"), "hostOverride must be host:port"))
    pol = route.policies
    authority = pol.url_rewrite.authority if pol and pol.url_rewrite else None
    if authority is not None and any(
        named.provider.kind == "bedrock"
        for b in route.backends
        for g in b.ai.provider_groups()
        for named in g
    ):
        problems.append(
            (
                (*rloc, "policies", "urlRewrite", "authority"),
                "cannot be used with Bedrock providers: SigV4 signs the provider's own host",
            )
        )
    if pol and pol.timeout:
        for name in (
            "request_timeout",
            "backend_request_timeout",
            "stream_idle_timeout",
            "stream_max_duration",
        ):
            value = getattr(pol.timeout, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    problems.append(((*rloc, "policies", "timeout"), str(exc)))
    return problems
