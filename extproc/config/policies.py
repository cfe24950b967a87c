"""Route and backend policies (agentgateway's names): retry, rewrite, CORS, timeouts, TLS, keys."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from extproc.config.ai import AIPolicy
from extproc.config.auth import (
    ApiKeyPolicy,
    AuthorizationPolicy,
    JwtAuthPolicy,
    ModelAccess,
    OpaPolicy,
    OpenFgaPolicy,
)
from extproc.config.base import DEFAULT_RETRY_CODES, Duration, Strict
from extproc.config.ratelimit import BudgetsPolicy, LocalRateLimit, RateLimitsPolicy, RemoteRateLimit

# --- policies ------------------------------------------------------------


class KeyAuth(Strict):
    """``backendAuth.key``: a literal or ``$ENV_VAR``, resolved by the sidecar."""

    key: str = Field(repr=False)  # never in the model's repr (a logged config, an error's context)


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
    # The gateway's own (agentgateway's timeout policy has no stream limits): this route's
    # config.limits.streamIdleTimeout and streamMaxDuration.
    stream_idle_timeout: Duration | None = Field(None, alias="streamIdleTimeout")
    stream_max_duration: Duration | None = Field(None, alias="streamMaxDuration")


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
    # Who calls and may they (extproc/config/auth.py); any of them puts the route behind authz.
    api_key: ApiKeyPolicy | None = Field(None, alias="apiKey")
    jwt_auth: JwtAuthPolicy | None = Field(None, alias="jwtAuth")
    authorization: AuthorizationPolicy | None = None
    opa: OpaPolicy | None = None
    openfga: OpenFgaPolicy | None = None
    model_access: ModelAccess | None = Field(None, alias="modelAccess")
    # Rate limits (extproc/config/ratelimit.py, extproc/limits/).
    local_rate_limit: list[LocalRateLimit] | None = Field(None, alias="localRateLimit")
    remote_rate_limit: RemoteRateLimit | None = Field(None, alias="remoteRateLimit")
    rate_limits: RateLimitsPolicy | None = Field(None, alias="rateLimits")
    budgets: BudgetsPolicy | None = None  # dollar budgets (extproc/pipeline/stages/budget.py)

    @property
    def has_auth(self) -> bool:
        return any(
            p is not None
            for p in (
                self.api_key,
                self.jwt_auth,
                self.authorization,
                self.opa,
                self.openfga,
                self.model_access,
            )
        )


class BackendPolicies(Strict):
    backend_auth: KeyAuth | None = Field(None, alias="backendAuth")
    backend_tls: BackendTLS | None = Field(None, alias="backendTLS")
