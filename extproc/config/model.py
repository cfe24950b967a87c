"""The gateway config: agentgateway's standalone YAML shape.

``binds -> listeners -> routes -> backends.ai / policies``. Every model forbids
unknown fields, so a typo or an unsupported feature is a load error naming the
field instead of being silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.config.ai import AIPolicy, RouteType

Loc = tuple[str | int, ...]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"100ms"``, ``"15s"``, ``"2m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m or h, like 30s")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


Duration = str | int | float

# The statuses providers use for "try again elsewhere": rate limits and every 5xx a provider
# answers when overloaded or failing (529 is Anthropic's overloaded_error). The default for
# failover routes and for a retry policy that names no codes.
DEFAULT_RETRY_CODES: tuple[int, ...] = (429, 500, 502, 503, 504, 529)

# Route and provider names become Envoy route names and endpoint metadata, which the sidecar reads
# back from protobuf text: printable ASCII only (text format escapes the rest), and no quote or
# backslash (escaped too). ``#`` separates a route's match index in Envoy route names, and ``/``
# separates route and provider in an endpoint id.
_NAME = re.compile(r"^[ -~]+$")
_NAME_FORBIDDEN = '"\\#'


def check_name(value: str | None, *, provider: bool = False) -> str | None:
    if value is None:
        return None
    forbidden = _NAME_FORBIDDEN + ("/" if provider else "")
    if not _NAME.match(value) or any(c in value for c in forbidden) or value != value.strip():
        shown = " ".join(forbidden)
        raise ValueError(
            f"{value!r} cannot be a name: use printable ASCII without {shown} or surrounding spaces"
        )
    return value


# A listener's hostname as Envoy matches virtual host domains: a DNS name, or ``*.`` and a DNS name.
_HOSTNAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


# --- matches -------------------------------------------------------------


class PathMatch(Strict):
    exact: str | None = None
    path_prefix: str | None = Field(None, alias="pathPrefix")
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PathMatch:
        if sum(v is not None for v in (self.exact, self.path_prefix, self.regex)) != 1:
            raise ValueError("set exactly one of exact, pathPrefix, regex")
        if self.regex is not None:
            re.compile(self.regex)
        return self


class ValueMatch(Strict):
    exact: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ValueMatch:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("set exactly one of exact, regex")
        return self


class HeaderMatch(Strict):
    name: str
    value: ValueMatch


class RouteMatch(Strict):
    path: PathMatch | None = None
    headers: list[HeaderMatch] = []
    query: list[HeaderMatch] = []
    method: str | None = None


# --- policies ------------------------------------------------------------


class KeyAuth(Strict):
    """``backendAuth.key``: a literal or ``$ENV_VAR``, resolved by the sidecar."""

    key: str


class Retry(Strict):
    attempts: int = Field(2, ge=1, le=10)
    codes: list[int] = list(DEFAULT_RETRY_CODES)
    backoff: Duration | None = None

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        for c in v:
            if not 100 <= c <= 599:
                raise ValueError(f"{c} is not an HTTP status code")
        return v


class PathRewrite(Strict):
    prefix: str | None = None
    full: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PathRewrite:
        if (self.prefix is None) == (self.full is None):
            raise ValueError("set exactly one of prefix, full")
        return self


class AuthorityRewrite(Strict):
    """The Host the provider sees: ``full`` (host[:port]) or ``host`` alone (sent without a port)."""

    full: str | None = None
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _one(self) -> AuthorityRewrite:
        if self.port is not None:
            raise ValueError('rewriting only the port is not supported; use full: "host:port"')
        if (self.full is None) == (self.host is None):
            raise ValueError("set exactly one of full, host")
        return self

    @property
    def value(self) -> str:
        return self.full if self.full is not None else str(self.host)


class UrlRewrite(Strict):
    path: PathRewrite | None = None
    authority: AuthorityRewrite | None = None


class Cors(Strict):
    allow_origins: list[str] = Field([], alias="allowOrigins")
    allow_headers: list[str] = Field([], alias="allowHeaders")
    allow_methods: list[str] = Field([], alias="allowMethods")
    expose_headers: list[str] = Field([], alias="exposeHeaders")
    allow_credentials: bool = Field(False, alias="allowCredentials")
    max_age: Duration | None = Field(None, alias="maxAge")


class Timeout(Strict):
    request_timeout: Duration | None = Field(None, alias="requestTimeout")
    backend_request_timeout: Duration | None = Field(None, alias="backendRequestTimeout")


class BackendTLS(Strict):
    """TLS to the upstream. Real provider hosts use TLS by default; overrides are plain HTTP."""

    insecure_skip_verify: bool = Field(False, alias="insecureSkipVerify")
    sni: str | None = None


class RoutePolicies(Strict):
    cors: Cors | None = None
    retry: Retry | None = None
    url_rewrite: UrlRewrite | None = Field(None, alias="urlRewrite")
    timeout: Timeout | None = None
    backend_auth: KeyAuth | None = Field(None, alias="backendAuth")
    backend_tls: BackendTLS | None = Field(None, alias="backendTLS")
    ai: AIPolicy | None = None


class BackendPolicies(Strict):
    backend_auth: KeyAuth | None = Field(None, alias="backendAuth")
    backend_tls: BackendTLS | None = Field(None, alias="backendTLS")


# --- providers -----------------------------------------------------------


class OpenAIProvider(Strict):
    model: str | None = None


class AnthropicProvider(Strict):
    model: str | None = None


class GeminiProvider(Strict):
    model: str | None = None


class VertexProvider(Strict):
    model: str | None = None
    region: str = "us-central1"
    project_id: str | None = Field(None, alias="projectId")


class BedrockProvider(Strict):
    model: str | None = None
    region: str = "us-east-1"
    # agentgateway's fields, refused until the gateway applies them: a guardrail the operator
    # configured must never be silently skipped.
    guardrail_identifier: str | None = Field(None, alias="guardrailIdentifier")
    guardrail_version: str | None = Field(None, alias="guardrailVersion")

    @field_validator("guardrail_identifier", "guardrail_version")
    @classmethod
    def _no_guardrails(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError(
                "Bedrock guardrails are not supported yet; remove the field (a later release adds them)"
            )
        return v


class AzureProvider(Strict):
    model: str | None = None
    resource_name: str | None = Field(None, alias="resourceName")
    deployment_name: str | None = Field(None, alias="deploymentName")
    api_version: str = Field("2024-10-21", alias="apiVersion")


class ProviderSpec(Strict):
    """Exactly one provider kind, as agentgateway spells them."""

    openai: OpenAIProvider | None = Field(None, alias="openAI")
    anthropic: AnthropicProvider | None = None
    gemini: GeminiProvider | None = None
    vertex: VertexProvider | None = None
    bedrock: BedrockProvider | None = None
    azure: AzureProvider | None = None

    @model_validator(mode="after")
    def _one(self) -> ProviderSpec:
        if len(self.kinds()) != 1:
            raise ValueError("set exactly one provider: openAI, anthropic, gemini, vertex, bedrock or azure")
        return self

    def kinds(self) -> list[str]:
        return [
            k for k in ("openai", "anthropic", "gemini", "vertex", "bedrock", "azure") if getattr(self, k)
        ]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def settings(self) -> Any:
        return getattr(self, self.kind)


class NamedProvider(Strict):
    name: str
    provider: ProviderSpec
    host_override: str | None = Field(None, alias="hostOverride")
    path_override: str | None = Field(None, alias="pathOverride")
    path_prefix: str | None = Field(None, alias="pathPrefix")
    routes: dict[str, RouteType] | None = None
    backend_auth: KeyAuth | None = Field(None, alias="backendAuth")
    policies: BackendPolicies | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return str(check_name(v, provider=True))


class ProviderGroup(Strict):
    providers: list[NamedProvider] = Field(min_length=1)


class AIBackend(Strict):
    name: str | None = None
    provider: ProviderSpec | None = None
    host_override: str | None = Field(None, alias="hostOverride")
    path_override: str | None = Field(None, alias="pathOverride")
    path_prefix: str | None = Field(None, alias="pathPrefix")
    routes: dict[str, RouteType] | None = None
    groups: list[ProviderGroup] | None = None
    policies: BackendPolicies | None = None

    @model_validator(mode="after")
    def _shape(self) -> AIBackend:
        if (self.provider is None) == (self.groups is None):
            raise ValueError("set either provider or groups")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return check_name(v, provider=True)  # the single-provider form's provider name

    def provider_groups(self) -> list[list[NamedProvider]]:
        """The single-provider form is one group of one provider."""
        if self.groups is not None:
            return [g.providers for g in self.groups]
        assert self.provider is not None
        single = NamedProvider(
            name=self.name or self.provider.kind,
            provider=self.provider,
            hostOverride=self.host_override,
            pathOverride=self.path_override,
            pathPrefix=self.path_prefix,
            routes=self.routes,
        )
        return [[single]]


class Backend(Strict):
    ai: AIBackend
    weight: int = Field(1, ge=1)


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


class GlobalConfig(Strict):
    admin_port: int = Field(15000, alias="adminPort")
    metrics_port: int = Field(15020, alias="metricsPort")
    readiness_port: int = Field(15021, alias="readinessPort")
    limits: Limits = Limits()


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
        for name in ("request_timeout", "sidecar_timeout"):
            try:
                parse_duration(getattr(self.config.limits, name))
            except ValueError as exc:
                alias = Limits.model_fields[name].alias or name
                problems.append((("config", "limits", alias), str(exc)))
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
        for name in ("request_timeout", "backend_request_timeout"):
            value = getattr(pol.timeout, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    problems.append(((*rloc, "policies", "timeout"), str(exc)))
    return problems
