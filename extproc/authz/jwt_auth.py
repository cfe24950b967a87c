"""jwtAuth: a bearer JWT from an OIDC provider (Keycloak, as the seeds use it), verified with the
provider's JWKS.

The token's ``iss`` picks the provider; its ``alg`` must be on the policy's allowlist (never
``none``, never HMAC) and fit the key its ``kid`` names; then the signature, issuer, audience,
``exp``/``nbf`` (with leeway) and required claims are checked by pyjwt. The identity comes from
the claims the policy names. Denials say what is wrong and never quote the token.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from jwt import exceptions as jwt_errors

from extproc.authz.caller import Caller, Unauthenticated, Unavailable
from extproc.authz.jwks import JwksSource, Key, KeySet, jwks_source
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest, looks_like_jwt
from extproc.config.auth import JwtAuthPolicy, JwtProvider
from extproc.config.base import parse_duration

log = logging.getLogger("gateway.authz.jwt")

# Far above any IdP's access token (Keycloak's, with groups, are 1-3 KiB); refused before parsing.
MAX_TOKEN_BYTES = 16 * 1024
# How many keys a kid-less token may be tried against (each try is a signature check).
_MAX_KIDLESS_TRIES = 4
_ALG_NAME = re.compile(r"^[A-Za-z0-9]{1,16}$")


@dataclass
class _Provider:
    issuer: str
    audiences: list[str] | None
    keys: JwksSource


@dataclass(frozen=True)
class _Verified:
    caller: Caller
    keyset: KeySet  # what it was verified against: a new key set (a refresh) verifies again
    exp: float | None
    nbf: float | None


class _Recent:
    """Tokens this route verified lately. A client sends one token for many requests (OpenWebUI
    for the token's whole life), and pyjwt's checks cost far more than the signature itself;
    a hit rechecks the time claims, and the key set must be the one it was verified with."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: OrderedDict[str, _Verified] = OrderedDict()

    def get(self, token: str, provider: _Provider, leeway: float) -> Caller | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        now = time.time()
        fresh = (entry.exp is None or now < entry.exp + leeway) and (
            entry.nbf is None or now >= entry.nbf - leeway
        )
        if not fresh or entry.keyset is not provider.keys.keyset:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return _copy(entry.caller)

    def put(self, token: str, entry: _Verified) -> None:
        self._entries[token] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


class JwtAuthenticator:
    name = "jwtAuth"

    def __init__(self, policy: JwtAuthPolicy, ctx: AuthContext) -> None:
        self.policy = policy
        self.mode = policy.mode
        self.algorithms = frozenset(policy.algorithms)
        self.leeway = parse_duration(policy.leeway)
        self.required = list(policy.jwt_validation_options.required_claims)
        self.providers = {p.issuer: self._provider(p, ctx) for p in policy.all_providers()}
        self.recent = _Recent()

    @staticmethod
    def _provider(p: JwtProvider, ctx: AuthContext) -> _Provider:
        return _Provider(p.issuer, list(p.audiences) if p.audiences else None, jwks_source(p.jwks, ctx))

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.keys.start()

    async def authenticate(self, req: AuthRequest) -> Caller | None:
        token = req.bearer
        if token is None:
            return None
        if len(token) > MAX_TOKEN_BYTES:
            if token.count(".") != 2:
                return None  # not a JWT's shape: some other authenticator's credential
            return self._refuse(Unauthenticated(f"the bearer token is larger than {MAX_TOKEN_BYTES} bytes"))
        if not looks_like_jwt(token):
            return None  # an API key's
        try:
            return await self._verify(token)
        except (Unauthenticated, Unavailable) as denial:
            return self._refuse(denial)

    def _refuse(self, denial: Unauthenticated | Unavailable) -> None:
        if self.mode == "permissive":
            # A token that cannot be verified is no identity, and this route serves anonymous callers.
            log.debug("jwtAuth (permissive): anonymous: %s", denial.message)
            return None
        raise denial

    async def _verify(self, token: str) -> Caller:
        header, unverified = _unverified(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
            # Checked here, not only by the allowlist: a symmetric alg would make a public key the secret.
            raise Unauthenticated(f"the token's algorithm {_safe(alg)} is not allowed (signed tokens only)")
        if alg not in self.algorithms:
            raise Unauthenticated(f"the token's algorithm {_safe(alg)} is not allowed on this route")
        provider = self._provider_for(unverified.get("iss"))
        cached = self.recent.get(token, provider, self.leeway)
        if cached is not None:
            return cached
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("the token's kid is not a string")
        keys = await provider.keys.lookup(kid)
        keyset = provider.keys.keyset
        if not keys or keyset is None:
            if keyset is None:
                raise Unavailable("the gateway cannot verify tokens yet: the issuer's keys are unavailable")
            raise Unauthenticated("the token's signing key (kid) is unknown to the issuer's key set")
        claims = self._check(token, alg, keys, provider)
        caller = self._caller(claims)
        times = _number(claims.get("exp")), _number(claims.get("nbf"))
        self.recent.put(token, _Verified(caller, keyset, *times))
        return _copy(caller)

    def _provider_for(self, iss: Any) -> _Provider:
        provider = self.providers.get(iss) if isinstance(iss, str) else None
        if provider is None:
            if len(self.providers) == 1 and iss is None:
                raise Unauthenticated("the token has no issuer (iss)")
            raise Unauthenticated("the token's issuer is not trusted on this route")
        return provider

    def _check(self, token: str, alg: str, keys: list[Key], provider: _Provider) -> dict[str, Any]:
        fitting = [k.for_alg(alg) for k in keys]
        verifiers = [v for v in fitting if v is not None]
        if not verifiers:
            raise Unauthenticated(f"the token's algorithm {alg} does not fit its key ({keys[0].kind})")
        failure: Unauthenticated | None = None
        for verifier in verifiers[:_MAX_KIDLESS_TRIES]:
            try:
                return jwt.decode(
                    token,
                    key=verifier,
                    algorithms=[alg],
                    issuer=provider.issuer,
                    audience=provider.audiences,
                    leeway=self.leeway,
                    options={"require": self.required, "verify_aud": provider.audiences is not None},
                )
            except jwt_errors.InvalidSignatureError:
                failure = Unauthenticated("the token's signature is invalid")
            except jwt_errors.PyJWTError as exc:
                raise Unauthenticated(_reason(exc)) from None
        assert failure is not None
        raise failure

    def _caller(self, claims: dict[str, Any]) -> Caller:
        c = self.policy.claims
        subject = claim(claims, c.subject)
        if not isinstance(subject, str | int) or subject == "":
            raise Unauthenticated(f"the token has no subject ({c.subject})")
        team = claim(claims, c.team) if c.team else None
        return Caller(
            method="jwt",
            subject=str(subject),
            groups=groups_of(claims, c.groups),
            team=team if isinstance(team, str) else "",
            claims=claims,
        )


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before any check, to pick the provider and key (pyjwt parses again,
    strictly, when it verifies: this is only for routing, and quick)."""
    try:
        head, body, _ = token.split(".")
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        raise Unauthenticated("the bearer token is not a well-formed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Unauthenticated("the bearer token is not a well-formed JWT")
    return header, claims


def _copy(c: Caller) -> Caller:
    """Each request its own Caller: what one request's checks do with it stays there."""
    return dataclasses.replace(c, groups=list(c.groups), labels=dict(c.labels), claims=dict(c.claims))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into objects (``realm_access.roles``). A name that is
    itself a claim wins: some IdPs name claims by URL (``https://example.com/groups``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def groups_of(claims: dict[str, Any], paths: list[str]) -> list[str]:
    """The groups at the first of ``paths`` the token has. Keycloak's group mapper writes full
    paths (``/engineering``); the leading ``/`` is dropped so groups read as names."""
    for path in paths:
        value = claim(claims, path)
        if value is None:
            continue
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        out = [g[1:] if g.startswith("/") else g for g in items if isinstance(g, str)]
        return [g for g in out if g]
    return []


def _reason(exc: jwt_errors.PyJWTError) -> str:
    """What is wrong with a token, in words a client can act on (pyjwt's own never quote it, but
    some quote claim values: these do not)."""
    if isinstance(exc, jwt_errors.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt_errors.ImmatureSignatureError):
        return "the token is not valid yet (nbf or iat in the future)"
    if isinstance(exc, jwt_errors.InvalidAudienceError):
        return "the token's audience (aud) is not accepted on this route"
    if isinstance(exc, jwt_errors.InvalidIssuerError):
        return "the token's issuer is not trusted on this route"
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return f"the token lacks the required claim {exc.claim!r}"  # a name from the config
    if isinstance(exc, jwt_errors.InvalidAlgorithmError):
        return "the token's algorithm does not fit its key"
    if isinstance(exc, jwt_errors.InvalidIssuedAtError):
        return "the token's issued-at time (iat) is not a number"
    if isinstance(exc, jwt_errors.DecodeError):
        return "the bearer token is not a well-formed JWT"
    return "the token is invalid"


def _safe(value: Any) -> str:
    """A short token field for a message, or a placeholder if it is anything but a plain name."""
    return repr(value) if isinstance(value, str) and _ALG_NAME.match(value) else "(unrecognised)"
