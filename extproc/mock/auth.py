"""Per-provider credential checks for the mock provider.

Each checker returns ``None`` when the request is authenticated, else the message for a 401. Any
non-empty credential is accepted, except values starting with ``invalid`` (so tests can exercise
"wrong key" paths). SigV4 signatures are not verified; only their shape and credential scope are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Headers = Mapping[str, str]
Query = Mapping[str, str]
Checker = Callable[[Headers, Query], str | None]

_CREDENTIAL = re.compile(r"Credential=([^,\s]+)")


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _is_valid(secret: str | None) -> bool:
    return bool(secret) and not str(secret).startswith("invalid")


def _check(secret: str | None, missing: str, invalid: str) -> str | None:
    if not secret:
        return missing
    return None if _is_valid(secret) else invalid


def openai(headers: Headers, query: Query) -> str | None:
    return _check(
        _bearer(headers),
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "Incorrect API key provided.",
    )


def azure(headers: Headers, query: Query) -> str | None:
    return _check(
        headers.get("api-key") or _bearer(headers),
        "Access denied due to missing subscription key. Make sure to include subscription key when making "
        "requests to an API.",
        "Access denied due to invalid subscription key or wrong API endpoint.",
    )


def anthropic(headers: Headers, query: Query) -> str | None:
    return _check(
        headers.get("x-api-key") or _bearer(headers), "x-api-key header is required", "invalid x-api-key"
    )


def gemini(headers: Headers, query: Query) -> str | None:
    return _check(
        headers.get("x-goog-api-key") or query.get("key"),
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
        "API key not valid. Please pass a valid API key.",
    )


def vertex(headers: Headers, query: Query) -> str | None:
    return _check(
        _bearer(headers),
        "Request is missing required authentication credential. Expected OAuth 2 access token.",
        "Request had invalid authentication credentials. Expected OAuth 2 access token.",
    )


def _sigv4(headers: Headers, value: str) -> str | None:
    if "x-amz-date" not in headers and "Date" not in headers:
        return "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    match = _CREDENTIAL.search(value)
    scope = match.group(1).split("/") if match else []
    if len(scope) != 5 or "SignedHeaders=" not in value or "Signature=" not in value:
        return "Authorization header is malformed."
    access_key, _date, _region, service, terminator = scope
    if service != "bedrock" or terminator != "aws4_request":
        return f"Credential should be scoped to correct service: 'bedrock'. (got '{service}')"
    if not _is_valid(access_key):
        return "The security token included in the request is invalid."
    return None


def bedrock(headers: Headers, query: Query) -> str | None:
    value = headers.get("Authorization", "")
    if value.startswith("AWS4-HMAC-SHA256 "):
        return _sigv4(headers, value)
    return _check(
        _bearer(headers),
        "Missing Authentication Token",
        "The security token included in the request is invalid.",
    )
