"""What the authz sidecar knows of a request: a typed view of Envoy's CheckRequest.

Built once per Check; the mechanisms (API keys, JWT, CEL, OPA, OpenFGA) read it and never the
protobuf, except OPA, which needs the whole CheckRequest as opa-envoy-plugin renders it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from envoy.service.auth.v3 import external_auth_pb2 as pb

from extproc.gateway import Gateway, ResolvedRoute
from extproc.headers import AUTHZ_ROUTE_KEY
from extproc.pipeline.client_request import api_of_path, client_api
from extproc.pipeline.stages.shaping import resolve_alias


@dataclass
class AuthRequest:
    check: pb.CheckRequest
    route: ResolvedRoute | None
    method: str
    path: str  # the client's, query included
    headers: dict[str, str]  # lowercase names; Envoy joins repeated headers with ","
    body: bytes
    source_address: str = ""
    _json: Any = field(default=None, repr=False)

    @classmethod
    def of(cls, check: pb.CheckRequest, gateway: Gateway) -> AuthRequest:
        http = check.attributes.request.http
        route_id = check.attributes.context_extensions.get(AUTHZ_ROUTE_KEY, "")
        route = gateway.routes_by_id.get(route_id)
        body = http.raw_body or http.body.encode()
        sock = check.attributes.source.address.socket_address
        return cls(
            check=check,
            route=route,
            method=http.method,
            path=http.path,
            headers=dict(http.headers),
            body=body,
            source_address=sock.address,
        )

    # --- the path ---------------------------------------------------------

    @cached_property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    @cached_property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.path.partition("?")[2], keep_blank_values=True)

    @cached_property
    def parsed_path(self) -> list[str]:
        """As opa-envoy-plugin: unescaped, leading ``/`` trimmed, split on ``/``."""
        return unquote(self.bare_path).lstrip("/").split("/")

    @cached_property
    def api(self) -> str:
        """The client API, for the error shape and for what the body means."""
        if self.route is None:
            return api_of_path(self.path)
        try:
            return client_api(self.route, self.path)
        except Exception:  # an unknown path: the router phase answers it (404) once allowed
            return api_of_path(self.path)

    # --- the body ---------------------------------------------------------

    @cached_property
    def json_body(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None (not JSON, empty, or not an object)."""
        if not self.body:
            return None
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    @cached_property
    def requested_model(self) -> str:
        """The model the client asked for ("" if none)."""
        body = self.json_body
        model = body.get("model") if body else None
        return model if isinstance(model, str) else ""

    @cached_property
    def model(self) -> str:
        """The model this request will use: the client's, through the route's aliases and a model
        override, so an alias cannot reach a model the caller may not use."""
        model = self.requested_model
        ai = self.route.policies.ai if self.route else None
        if ai is None:
            return model
        override = ai.overrides.get("model")
        if isinstance(override, str):
            return override
        if model and ai.model_aliases:
            return resolve_alias(dict(ai.model_aliases), model) or model
        return model

    @property
    def lists_models(self) -> bool:
        return self.method == "GET" and self.api == "models"

    # --- credentials ------------------------------------------------------

    @cached_property
    def bearer(self) -> str | None:
        """The token in ``Authorization: Bearer``, if any."""
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def cel_request(self) -> dict[str, Any]:
        """``request`` in CEL rules."""
        return {
            "method": self.method,
            "path": self.bare_path,
            "host": self.headers.get(":authority", ""),
            "headers": {k: v for k, v in self.headers.items() if k not in _SECRET_HEADERS},
        }

    def cel_llm(self) -> dict[str, Any]:
        """``llm`` in CEL rules."""
        body = self.json_body or {}
        return {
            "model": self.model,
            "requestModel": self.requested_model,
            "stream": bool(body.get("stream", False)),
            "api": self.api,
        }


# Never handed to rules: a rule has no business reading a credential.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose first is a JSON header with ``alg``: a JWT, not an API key."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    head = parts[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and "alg" in header
