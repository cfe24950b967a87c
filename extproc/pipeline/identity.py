"""The caller as the router phase records it: authz's Identity, flattened for stages and records.

Only ext_authz can write its metadata namespace, so nothing here comes from the client. A route
with an auth policy and no identity (or one that does not decode) is refused: fail closed.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc import contracts
from extproc.errors import GatewayError
from extproc.gateway import ResolvedRoute
from extproc.pipeline import route_facts

_METHODS = {
    contracts.AuthMethod.AUTH_METHOD_API_KEY: "api_key",
    contracts.AuthMethod.AUTH_METHOD_JWT: "jwt",
}


def caller_identity(route: ResolvedRoute, encoded: str | None) -> dict[str, Any]:
    """``user_id``, ``api_key_id``, ``group_id`` (the team, else the first group), ``groups``,
    ``labels``, ``auth_method`` and ``allowed_models`` (None: not restricted); {} if anonymous."""
    if encoded is None:
        if route_facts.of(route).needs_authz:
            raise GatewayError(
                503, "the caller's identity did not reach the gateway", code="identity_missing"
            )
        return {}
    try:
        ident = contracts.decode_identity(encoded)
    except contracts.ContractError as exc:
        raise GatewayError(
            503, f"the caller's identity is unreadable ({exc})", code="identity_invalid"
        ) from None
    out: dict[str, Any] = {}
    method = _METHODS.get(ident.auth_method)
    if method is not None:
        groups = list(ident.group_ids)
        out = {
            "auth_method": method,
            "user_id": ident.subject or None,
            "api_key_id": ident.api_key_id or None,
            "group_id": ident.team or (groups[0] if groups else None),
            "groups": groups,
            "labels": dict(ident.labels),
            # For CEL fields (jwt.*, apiKey.*) in logs, metrics and traces.
            "jwt": orjson.loads(ident.jwt_claims_json) if ident.jwt_claims_json else {},
            "api_key": orjson.loads(ident.api_key_json) if ident.api_key_json else {},
        }
    if ident.models_restricted:
        out["allowed_models"] = list(ident.allowed_models)
    return out
