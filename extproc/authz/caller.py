"""Who is calling (as the authenticators proved it), what a check may add, and how it refuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc.contracts import AuthMethod, Identity


@dataclass
class Caller:
    """The identity being established. ``method`` None is anonymous (no credential, and the
    route's policies allow that)."""

    method: str | None = None  # "api_key" | "jwt"
    subject: str = ""  # the user: the JWT's subject claim, or the key's owner
    api_key_id: str = ""
    groups: list[str] = field(default_factory=list)
    team: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # Models this credential may use (None: the credential itself does not restrict them).
    allowed_models: list[str] | None = None
    claims: dict[str, Any] = field(default_factory=dict)  # the verified JWT's claims (CEL `jwt`)
    api_key: dict[str, Any] = field(default_factory=dict)  # the key's metadata (CEL `apiKey`)

    @property
    def anonymous(self) -> bool:
        return self.method is None

    def identity(self, allowed_models: list[str] | None) -> Identity:
        """The contract extproc reads. ``allowed_models`` is what the route's checks found this
        caller may list (None: no restriction)."""
        method = {
            "api_key": AuthMethod.AUTH_METHOD_API_KEY,
            "jwt": AuthMethod.AUTH_METHOD_JWT,
        }.get(self.method or "", AuthMethod.AUTH_METHOD_NONE)
        ident = Identity(auth_method=method)
        if method != AuthMethod.AUTH_METHOD_NONE:
            ident.subject = self.subject
            ident.api_key_id = self.api_key_id
            ident.group_ids.extend(self.groups)
            ident.team = self.team
            ident.labels.update(self.labels)
            if self.claims:
                ident.jwt_claims_json = orjson.dumps(self.claims, default=str)
            if self.api_key:
                ident.api_key_json = orjson.dumps(self.api_key, default=str)
        if allowed_models is not None:
            ident.models_restricted = True
            ident.allowed_models.extend(allowed_models)
        return ident

    def cel(self) -> dict[str, Any]:
        """``jwt`` and ``apiKey`` in CEL rules (empty maps when absent, so rules can test them)."""
        return {"jwt": self.claims, "apiKey": self.api_key}


@dataclass
class Grant:
    """What an allowing check adds (OPA's object decisions): request headers for the provider
    side, response headers for the client, request headers to remove, dynamic metadata."""

    headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: Grant | None) -> None:
        if other is None:
            return
        self.headers.update(other.headers)
        self.response_headers.update(other.response_headers)
        self.remove_headers.extend(other.remove_headers)
        self.metadata.update(other.metadata)


class Denial(Exception):
    """A refusal. ``body`` (raw bytes with its content type) is an OPA decision's own body;
    otherwise the client gets ``message`` in its API's error JSON."""

    status = 403
    code = "forbidden"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.body = body
        self.caller: Caller | None = None  # who was refused, when authentication got that far


class Unauthenticated(Denial):
    """Missing or invalid credentials: 401 with ``WWW-Authenticate``."""

    status = 401
    code = "invalid_api_key"

    def __init__(self, message: str, *, scheme: str = "Bearer", error: str = "invalid_token") -> None:
        challenge = f'{scheme} realm="llm-gateway"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(message, headers={"www-authenticate": challenge})


class Forbidden(Denial):
    """Known caller, not allowed: 403."""


class Unavailable(Denial):
    """A policy's backend (an OPA server, OpenFGA, a JWKS URL) cannot decide: fail closed, 503."""

    status = 503
    code = "authorization_unavailable"
