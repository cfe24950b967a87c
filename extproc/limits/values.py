"""The values a request's rate limit descriptors carry.

Two sources: the identity keys of a ``rateLimits`` policy file (``api_key_id``, ``user_id``,
``group_id``, ``model``, ``route``), and ``remoteRateLimit``'s CEL expressions, in agentgateway's
names (``jwt.sub``, ``apiKey.id``, ``request.headers["x-org"]``, ``llm.requestModel``), plus
this project's ``identity`` (the flattened caller) and ``route`` (the route's name).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cel

from extproc.pipeline.exchange import Exchange

# The keys a policy file may name, and where each comes from.
IDENTITY_KEYS = ("api_key_id", "user_id", "group_id", "model", "route")
CEL_VARIABLES = ("jwt", "apiKey", "request", "llm", "identity", "route")


class DescriptorValueError(ValueError):
    """A CEL value that cannot be a descriptor value (the config check reports it)."""


@lru_cache(maxsize=512)
def compile_value(source: str) -> cel.Program:
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise DescriptorValueError(f"invalid CEL expression {source!r}: {first}") from None
    unknown = set(program.variables()) - set(CEL_VARIABLES)
    if unknown:
        raise DescriptorValueError(
            f"CEL expression {source!r} uses unknown variable {', '.join(sorted(unknown))}: "
            f"descriptor values can use {', '.join(CEL_VARIABLES)}"
        )
    return program


def model_of(ex: Exchange) -> str | None:
    """The model the request will use: a single provider's configured model wins at egress."""
    direct = ex.route.direct_upstream
    if direct is not None and direct.model:
        return direct.model
    return ex.request_model or None


def identity_values(ex: Exchange) -> dict[str, str]:
    """The policy-file keys this request has a value for (anonymous callers have only two)."""
    ident = ex.identity
    out = {k: str(ident[k]) for k in ("api_key_id", "user_id", "group_id") if ident.get(k)}
    model = model_of(ex)
    if model:
        out["model"] = model
    out["route"] = ex.route.name
    return out


def cel_context(ex: Exchange) -> cel.Context:
    ident = ex.identity
    data: dict[str, Any] = {
        "jwt": ident.get("jwt") or {},
        "apiKey": ident.get("api_key") or {},
        "request": {"headers": ex.headers, "path": ex.path, "method": ex.method},
        "llm": {"requestModel": ex.request_model or ""},
        "identity": {
            "user_id": ident.get("user_id") or "",
            "api_key_id": ident.get("api_key_id") or "",
            "group_id": ident.get("group_id") or "",
            "groups": list(ident.get("groups") or []),
        },
        "route": ex.route.name,
    }
    return cel.Context(data)


def evaluate(program: cel.Program, ctx: cel.Context) -> str | None:
    """The value as a descriptor value; None (the descriptor is not sent) when the expression
    fails (a missing claim) or gives nothing (an empty string, null)."""
    try:
        value = program.execute(ctx)
    except Exception:  # a missing field or a type error: this request has no such value
        return None
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
