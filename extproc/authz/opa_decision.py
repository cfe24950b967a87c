"""An OPA decision, read as opa-envoy-plugin reads it (``envoyauth/response.go``).

A boolean allows or refuses (403). An object must have a boolean ``allowed``; on allow its
``headers`` go to the upstream request, ``response_headers_to_add`` to the client,
``request_headers_to_remove`` are removed and ``dynamic_metadata`` becomes ext_authz metadata;
on refusal ``headers``, ``body`` and ``http_status`` (default 403) are the client's answer.

A decision the plugin would reject (no ``allowed``, a header that is not a string, a status that
is not one) is a policy fault: logged, and the request refused with 503 (the plugin's error,
under this gateway's ``status_on_error``), never allowed.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from extproc.authz.caller import Denial, Forbidden, Grant, Unavailable

log = logging.getLogger("gateway.authz")

# What opa_eval returns for an undefined result.
UNDEFINED = "<undefined>"


class DecisionError(ValueError):
    """The policy's result is not a decision opa-envoy-plugin would accept."""


def grant_or_denial(decision: Any, where: str) -> Grant | None:
    """The Grant for an allowing decision; raises the Denial for any other."""
    try:
        return _read(decision)
    except DecisionError as exc:
        log.error("opa: %s gave an invalid decision: %s", where, exc)
        raise Unavailable("the authorization policy gave no valid decision") from None


def _read(decision: Any) -> Grant | None:
    if decision is True:
        return None
    if decision is False:
        raise Forbidden("the authorization policy does not allow this request")
    if not isinstance(decision, dict):
        raise DecisionError(f"expected a boolean or an object, got {type(decision).__name__}")
    if "allowed" not in decision:
        raise DecisionError('missing "allowed" key')
    allowed = decision["allowed"]
    if not isinstance(allowed, bool):
        raise DecisionError(f'"allowed" must be a boolean, got {type(allowed).__name__}')
    headers = _headers(decision.get("headers"), "headers")
    metadata = decision.get("dynamic_metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise DecisionError("dynamic_metadata must be an object")
    if allowed:
        return Grant(
            headers=headers,
            response_headers=_headers(decision.get("response_headers_to_add"), "response_headers_to_add"),
            remove_headers=_strings(decision.get("request_headers_to_remove"), "request_headers_to_remove"),
            metadata=dict(metadata or {}),
        )
    body = decision.get("body")
    if body is not None and not isinstance(body, str):
        raise DecisionError(f"body must be a string, got {type(body).__name__}")
    raise Denial(
        "the authorization policy does not allow this request",
        status=_status(decision.get("http_status")),
        code="forbidden",
        headers=headers,
        body=body.encode() if body is not None else None,
    )


def _headers(value: Any, field: str) -> dict[str, str]:
    """An object, or a list of objects, of string or string-list values (a list is joined, as
    repeated headers are)."""
    if value is None:
        return {}
    maps = value if isinstance(value, list) else [value]
    out: dict[str, str] = {}
    for item in maps:
        if not isinstance(item, dict):
            raise DecisionError(f"{field} must be an object or a list of objects")
        for key, v in item.items():
            name = key.lower()  # one header whatever its case (Envoy sends them lowercase)
            values = v if isinstance(v, list) else [v]
            if not all(isinstance(x, str) for x in values):
                raise DecisionError(f"{field}: header {name!r} must be a string or a list of strings")
            joined = ",".join(values)
            out[name] = f"{out[name]},{joined}" if name in out else joined
    return out


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise DecisionError(f"{field} must be a list of strings")
    return list(value)


def _status(value: Any) -> int:
    if value is None:
        return 403
    # JSON numbers: 403 and 403.0 are one number to the plugin.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise DecisionError(f"http_status must be a number, got {value!r}")
    code = int(value)
    try:
        HTTPStatus(code)
    except ValueError:
        raise DecisionError(f"invalid HTTP status code {code}") from None
    if code < 200:
        raise DecisionError(f"invalid HTTP status code {code} for a refusal")
    return code
