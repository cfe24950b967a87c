"""Auth policies on a route: who calls (apiKey, jwtAuth) and may they (authorization, opa,
openfga, modelAccess). ``apiKey``, ``jwtAuth`` and ``authorization`` are agentgateway's shapes;
``opa``, ``openfga`` and ``modelAccess`` are this project's own, written in the same style.

A route with any of them is checked by the authz sidecar (ext_authz), failing closed.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from extproc.config.base import Duration, Strict, parse_duration

# --- who calls ------------------------------------------------------------

# strict: a valid credential is required. optional: no credential passes as anonymous, an
# invalid one is refused. permissive: an invalid one passes as anonymous too.
AuthMode = Literal["strict", "optional", "permissive"]


_KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class ApiKeyEntry(Strict):
    """An inline key: the key itself (``key``, a literal or ``$ENV_VAR``) or its hash."""

    key: str | None = Field(None, repr=False)  # never in a repr (a logged config, an error)
    key_hash: str | None = Field(None, alias="keyHash")
    # Free-form; ``id``, ``user``, ``group``/``groups`` and ``team`` are read as the identity.
    metadata: dict[str, Any] = {}
    allowed_models: list[str] | None = Field(None, alias="allowedModels")

    @model_validator(mode="after")
    def _one(self) -> ApiKeyEntry:
        if (self.key is None) == (self.key_hash is None):
            raise ValueError("set exactly one of key, keyHash")
        # The keys file's format (extproc/authz/keyfile.py), checked here so `check` reports it.
        if self.key_hash is not None and not _KEY_HASH.match(self.key_hash.strip().lower()):
            raise ValueError("keyHash is sha256:<64 hex digits> (the SHA-256 of the key)")
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

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("the JWKS url must be http:// or https://")
        return v

    @field_validator("cache_duration")
    @classmethod
    def _duration(cls, v: Duration) -> Duration:
        if parse_duration(v) <= 0:
            raise ValueError("cacheDuration must be positive")
        return v


def _jwks_kind(value: Any) -> str | None:
    """Which form a ``jwks`` value is, by its keys: a plain union would take ``{url: ...}`` for
    an inline key set (a dict), and a typo in it would pass unnoticed."""
    if isinstance(value, str):
        return "json"
    if isinstance(value, JwksFile):
        return "file"
    if isinstance(value, JwksUrl):
        return "url"
    if isinstance(value, dict):
        for key, kind in (("keys", "inline"), ("file", "file"), ("url", "url")):
            if key in value:
                return kind
    return None


def _inline_keys(value: str | dict[str, Any]) -> str | dict[str, Any]:
    doc = value
    if isinstance(value, str):
        try:
            doc = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"inline jwks is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ValueError('an inline jwks is a JSON Web Key Set: {"keys": [...]} with at least one key')
    return value


_InlineJson = Annotated[str, Tag("json")]
_InlineSet = Annotated[dict[str, Any], Tag("inline")]

# Inline JWKS JSON (a string or the object itself), a file, or a URL.
Jwks = Annotated[
    _InlineJson | _InlineSet | Annotated[JwksFile, Tag("file")] | Annotated[JwksUrl, Tag("url")],
    Discriminator(
        _jwks_kind,
        custom_error_type="jwks",
        custom_error_message='jwks is inline JSON (a string or {"keys": [...]}), {file: path} or {url: ...}',
    ),
]


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

    @field_validator("jwks")
    @classmethod
    def _inline(cls, v: Any) -> Any:
        return _inline_keys(v) if isinstance(v, str | dict) else v


# The signature algorithms a JWKS of public keys can serve (pyjwt's names).
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


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
        bad = [a for a in self.algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"algorithms {bad} are not allowed: keys come from a JWKS of public keys")
        unknown = [a for a in self.algorithms if a not in _ASYMMETRIC]
        if unknown:
            raise ValueError(f"algorithms {unknown} are unknown: use some of {sorted(_ASYMMETRIC)}")
        if not self.algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        if isinstance(self.jwks, str | dict):
            _inline_keys(self.jwks)
        issuers = [p.issuer for p in self.all_providers()]
        if len(set(issuers)) != len(issuers):
            raise ValueError("two providers have the same issuer: a token's iss picks its provider")
        if parse_duration(self.leeway) < 0:
            raise ValueError("leeway cannot be negative")
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


# What OpenFGA templates may name, filled from the identity and the request.
OPENFGA_FIELDS = ("user", "api_key", "group", "model")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def template_fields(text: str, where: str) -> set[str]:
    """The placeholders of an OpenFGA template; ValueError naming any unknown one."""
    fields = set(_PLACEHOLDER.findall(text))
    unknown = sorted(fields - set(OPENFGA_FIELDS))
    if unknown:
        names = ", ".join("{" + f + "}" for f in OPENFGA_FIELDS)
        raise ValueError(f"openfga {where}: unknown placeholder {unknown} in {text!r} (use {names})")
    return fields


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
    api_token: str | None = Field(None, alias="apiToken", repr=False)  # a literal or $ENV_VAR

    @model_validator(mode="after")
    def _templates(self) -> OpenFgaPolicy:
        for where, text in (("user", self.user), ("relation", self.relation), ("object", self.object)):
            template_fields(text, where)
        if self.group_tuple:
            obj, sep, relation = self.group_tuple.rpartition("#")
            if not sep or not obj or not relation:
                raise ValueError(
                    f"openfga groupTuple: expected 'type:{{group}}#relation', got {self.group_tuple!r}"
                )
            template_fields(obj, "groupTuple")
        return self


class ModelAccess(Strict):
    """Which models a caller may use, by group or user (``*`` patterns allowed). A caller in
    several groups gets the union; one named nowhere gets ``default`` (none when unset)."""

    groups: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    default: list[str] = []
