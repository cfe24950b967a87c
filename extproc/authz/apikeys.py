"""The ``apiKey`` authenticator: keys inline in the policy and/or in an operator-managed keys file.

Clients send ``Authorization: Bearer <key>`` or ``x-api-key: <key>``. A bearer that looks like a
JWT belongs to jwtAuth and is left alone. A key is looked up by its SHA-256 digest, so the
sidecar holds no key itself (inline literal keys are hashed at start). Looking up a digest in a
dict is not constant-time, and need not be: the attacker chooses the key, not its digest, so the
timing of digest comparisons tells them nothing about any stored key; raw secrets are never
compared.

A key in the URL (``?api_key=``, ``?key=``...) is refused outright: URLs end up in access logs,
proxies and browser history, so such a key must be treated as leaked, and the client is told to
send it in a header.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from extproc.authz.caller import Caller, Unauthenticated
from extproc.authz.keyfile import ApiKey, KeyFileStore, digest_of
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest, looks_like_jwt
from extproc.config.auth import ApiKeyEntry, ApiKeyPolicy
from extproc.gateway import resolve_secret

log = logging.getLogger("gateway.authz")

# Query parameters clients (and provider SDKs: Gemini's ``?key=``) put keys in; compared lowercase.
QUERY_KEY_PARAMS = frozenset({"api_key", "apikey", "api-key", "key", "x-api-key", "x_api_key"})

# No key of ours is this long; a longer value is refused without hashing it.
MAX_KEY_BYTES = 512


def _key_in_query(req: AuthRequest) -> bool:
    return any(name.lower() in QUERY_KEY_PARAMS for name in req.query)


def presented_key(req: AuthRequest) -> str | None:
    """The API key the client sent, or None if it sent none (a JWT bearer is not one)."""
    value = req.headers.get("x-api-key", "").strip()
    if value:
        return value
    bearer = req.bearer
    if bearer is None or looks_like_jwt(bearer):
        return None
    return bearer


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def inline_key(entry: ApiKeyEntry, index: int) -> ApiKey | None:
    """A policy's inline key, or None when its ``$ENV_VAR`` is unset or empty (then no one can
    use it: an empty variable must never make the empty string a key)."""
    meta = dict(entry.metadata)
    if entry.key_hash is not None:
        digest = digest_of(entry.key_hash)
    else:
        secret, missing = resolve_secret(entry.key)
        if not secret:
            log.warning(
                "apiKey: keys[%d]: environment variable %s is not set; that key is disabled", index, missing
            )
            return None
        digest = hashlib.sha256(secret.encode()).digest()
    groups = _str_list(meta.get("groups", meta.get("group")))
    labels = meta.get("labels")
    return ApiKey(
        # Without metadata.id the key is named by its place in the list: stable while the list is,
        # and nothing derived from the key (a weak inline key must not be guessable from logs).
        id=str(meta.get("id") or f"inline-{index}"),
        digest=digest,
        user=str(meta.get("user") or ""),
        groups=groups,
        team=str(meta.get("team") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        allowed_models=None if entry.allowed_models is None else list(entry.allowed_models),
        metadata=meta,
    )


def caller_of(key: ApiKey) -> Caller:
    cel: dict[str, Any] = {
        **key.metadata,
        "id": key.id,
        "user": key.user,
        "group": key.groups[0] if key.groups else "",
        "groups": list(key.groups),
        "team": key.team,
        "labels": dict(key.labels),
    }
    if key.allowed_models is not None:
        cel["allowedModels"] = list(key.allowed_models)
    return Caller(
        method="api_key",
        subject=key.user,
        api_key_id=key.id,
        groups=list(key.groups),
        team=key.team,
        labels=dict(key.labels),
        allowed_models=None if key.allowed_models is None else list(key.allowed_models),
        api_key=cel,
    )


class ApiKeyAuthenticator:
    name = "apiKey"

    def __init__(self, policy: ApiKeyPolicy, ctx: AuthContext) -> None:
        self.policy = policy
        self.ctx = ctx
        self.mode = policy.mode
        self.inline: dict[bytes, ApiKey] = {}
        self.store = KeyFileStore(ctx.path(policy.file)) if policy.file is not None else None

    async def start(self) -> None:
        inline: dict[bytes, ApiKey] = {}
        for i, entry in enumerate(self.policy.keys):
            key = inline_key(entry, i)
            if key is not None:
                inline[key.digest] = key
        self.inline = inline
        if self.store is not None:
            await self.store.start(self.ctx.spawn)

    def lookup(self, key: str) -> ApiKey | None:
        digest = hashlib.sha256(key.encode()).digest()
        found = self.inline.get(digest)
        if found is None and self.store is not None:
            found = self.store.keys.get(digest)
        return found

    async def authenticate(self, req: AuthRequest) -> Caller | None:
        if _key_in_query(req):
            # The message names no value; the path (with the key) is never logged here.
            raise Unauthenticated(
                "API keys are not accepted in the URL: send it in the Authorization: Bearer or "
                "x-api-key header (and treat the key you sent as leaked)"
            )
        presented = presented_key(req)
        if presented is None:
            return None
        if len(presented.encode()) > MAX_KEY_BYTES:
            raise Unauthenticated("invalid API key")
        key = self.lookup(presented)
        if key is None:
            raise Unauthenticated("invalid API key")
        if key.revoked:
            raise Unauthenticated("this API key has been revoked")
        if key.expired(time.time()):
            raise Unauthenticated("this API key has expired")
        return caller_of(key)
