"""Auth policies on a route: who calls (apiKey, jwtAuth) and may they (authorization, opa,
openfga, modelAccess). ``apiKey``, ``jwtAuth`` and ``authorization`` are agentgateway's shapes;
``opa``, ``openfga`` and ``modelAccess`` are this project's own, written in the same style.

A route with any of them is checked by the authz sidecar (ext_authz), failing closed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from extproc.config.base import Duration, Strict

# --- who calls ------------------------------------------------------------

# strict: a valid credential is required. optional: no credential passes as anonymous, an
# invalid one is refused. permissive: an invalid one passes as anonymous too.
AuthMode = Literal["strict", "optional", "permissive"]


class ApiKeyEntry(Strict):
    """An inline key: the key itself (``key``, a literal or ``$ENV_VAR``) or its hash."""

    key: str | None = None
    key_hash: str | None = Field(None, alias="keyHash")
    # Free-form; ``id``, ``user``, ``group``/``groups`` and ``team`` are read as the identity.
    metadata: dict[str, Any] = {}
    allowed_models: list[str] | None = Field(None, alias="allowedModels")

    @model_validator(mode="after")
    def _one(self) -> ApiKeyEntry:
        if (self.key is None) == (self.key_hash is None):
            raise ValueError("set exactly one of key, keyHash")
        return self


class ApiKeyPolicy(Strict):
    keys: list[ApiKeyEntry] = []
    # The operator-managed keys file (hashes only), relative to the config file's folder;
    # managed with `gateway keys create|list|revoke`, reloaded while running.
    file: str | None = None
    mode: Literal["strict", "optional"] = "strict"

    @model_validator(mode="after")
    def _some(self) -> ApiKeyPolicy:
        if not self.keys and self.file is None:
            raise ValueError("set keys, file or both")
        return self


class JwksFile(Strict):
    file: str


class JwksUrl(Strict):
    url: str
    # How long a fetched key set is used before it is fetched again (an unknown kid refetches sooner).
    cache_duration: Duration = Field("5m", alias="cacheDuration")


# Inline JWKS JSON (a string or the object itself), a file, or a URL.
Jwks = str | dict[str, Any] | JwksFile | JwksUrl


class JwtClaims(Strict):
    """Where the identity is in the token (this project's extension). Dotted paths reach into
    objects: Keycloak's realm roles are ``realm_access.roles``."""

    subject: str = "sub"
    groups: list[str] = ["groups", "realm_access.roles"]
    team: str | None = None


class JwtValidation(Strict):
    required_claims: list[str] = Field(["exp"], alias="requiredClaims")


class JwtProvider(Strict):
    issuer: str
    audiences: list[str] | None = None
    jwks: Jwks


class JwtAuthPolicy(Strict):
    # strict by default here (agentgateway defaults to optional): a route that names jwtAuth
    # expects a token, and fail closed is the safe reading of a config that does not say.
    mode: AuthMode = "strict"
    issuer: str | None = None
    audiences: list[str] | None = None
    jwks: Jwks | None = None
    providers: list[JwtProvider] = []
    jwt_validation_options: JwtValidation = Field(JwtValidation(), alias="jwtValidationOptions")
    claims: JwtClaims = JwtClaims()
    # Never none, never HMAC: keys come from a JWKS of public keys.
    algorithms: list[str] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
    leeway: Duration = "30s"

    @model_validator(mode="after")
    def _providers(self) -> JwtAuthPolicy:
        inline = self.issuer is not None or self.jwks is not None
        if inline == bool(self.providers):
            raise ValueError("set issuer and jwks, or providers[], not both")
        if inline and (self.issuer is None or self.jwks is None):
            raise ValueError("issuer and jwks go together")
        bad = [a for a in self.algorithms if a == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"algorithms {bad} are not allowed: keys come from a JWKS of public keys")
        return self

    def all_providers(self) -> list[JwtProvider]:
        if self.providers:
            return list(self.providers)
        return [JwtProvider(issuer=str(self.issuer), audiences=self.audiences, jwks=self.jwks)]


# --- may they ---------------------------------------------------------------


class Rule(Strict):
    """One CEL rule. allow: the request passes if any allow rule is true (when there are any).
    deny: a true deny rule refuses it. require: every require rule must be true."""

    allow: str | None = None
    deny: str | None = None
    require: str | None = None

    @field_validator("allow", "deny", "require")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        # Compiled when the config loads, so a bad rule is a config error naming its field.
        if value is not None:
            from extproc.authz.cel_expr import compile_expression

            compile_expression(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> Rule:
        if sum(x is not None for x in (self.allow, self.deny, self.require)) != 1:
            raise ValueError("set exactly one of allow, deny, require")
        return self


def _bare_string_allows(value: Any) -> Any:
    return {"allow": value} if isinstance(value, str) else value


class AuthorizationPolicy(Strict):
    # A bare string is an allow rule (read as one here, so an error names rules[i], not a union member).
    rules: list[Annotated[Rule, BeforeValidator(_bare_string_allows)]]


class OpaPolicy(Strict):
    """Rego, in process (``file``) or on an OPA server (``url``), with opa-envoy-plugin's input."""

    file: str | None = None  # a .rego file, relative to the config file's folder
    data: str | None = None  # an optional JSON data file for the in-process engine
    url: str | None = None  # an OPA server's base URL (its REST Data API)
    # The decision's path, as opa-envoy-plugin's `path` (data.envoy.authz.allow).
    path: str = "envoy/authz/allow"
    timeout: Duration = "1s"

    @model_validator(mode="after")
    def _where(self) -> OpaPolicy:
        if (self.file is None) == (self.url is None):
            raise ValueError("set exactly one of file (in process) or url (an OPA server)")
        if self.data is not None and self.file is None:
            raise ValueError("data is for the in-process engine (file)")
        return self


class OpenFgaPolicy(Strict):
    """A Check per request: may this caller use the model? ``{user}``, ``{group}``, ``{api_key}``
    and ``{model}`` in the templates are filled from the identity and the request."""

    url: str  # the OpenFGA server's HTTP API
    store_id: str = Field(alias="storeId")
    authorization_model_id: str | None = Field(None, alias="authorizationModelId")
    user: str = "user:{user}"
    relation: str = "can_use"
    object: str = "llm_model:{model}"
    # Contextual tuples for each of the caller's groups (their group memberships as the identity
    # provider states them), so the store need not mirror the IdP: [] turns it off.
    group_tuple: str | None = Field("team:{group}#member", alias="groupTuple")
    cache_ttl: Duration = Field("10s", alias="cacheTtl")
    timeout: Duration = "1s"
    api_token: str | None = Field(None, alias="apiToken")  # a literal or $ENV_VAR


class ModelAccess(Strict):
    """Which models a caller may use, by group or user (``*`` patterns allowed). A caller in
    several groups gets the union; one named nowhere gets ``default`` (none when unset)."""

    groups: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    default: list[str] = []
