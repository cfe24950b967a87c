"""What the client asked for: which API, which path after rewrite, and a valid body.

Pure functions over the resolved route; errors are GatewayErrors the router phase
answers in the client API's shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc import schema
from extproc.errors import GatewayError
from extproc.gateway import ResolvedRoute
from extproc.pipeline import route_facts

# Client APIs, by the path's suffix (agentgateway's default route types).
_SUFFIX_API: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "completions"),
    ("/messages", "messages"),
    ("/embeddings", "embeddings"),
    ("/models", "models"),
)


def api_of_path(path: str) -> str:
    """The client API by path alone (before the route is known, for error shapes)."""
    return "messages" if path.split("?", 1)[0].rstrip("/").endswith("/messages") else "completions"


def client_api(route: ResolvedRoute, path: str) -> str:
    """Which API a path speaks: a ``routes`` map wins, then the path's suffix.

    Passthrough (the provider's whole API with the gateway's key: files, fine-tuning,
    deletes) is opt-in: only a ``routes`` map entry, such as ``'*': passthrough``,
    allows it. Any other path is a 404.
    """
    bare = path.split("?", 1)[0].rstrip("/")
    tables = route_facts.of(route).tables
    for table in tables:
        for suffix, kind in table.items():
            if suffix != "*" and bare.endswith(suffix.rstrip("/")):
                return kind
    for suffix, api in _SUFFIX_API:
        if bare.endswith(suffix):
            return api
    for table in tables:
        if "*" in table:
            return table["*"]
    raise GatewayError(
        404,
        f"this gateway serves no API at {path.split('?', 1)[0]} on route {route.name!r} "
        "(chat completions, messages, embeddings and models are served; other provider paths need a "
        "routes entry such as '*': passthrough)",
        code="unknown_path",
    )


def rewritten_path(route: ResolvedRoute, path: str) -> str:
    """Apply ``urlRewrite.path``: replace the matched prefix, or the whole path."""
    rewrite = route.policies.url_rewrite
    if not rewrite or not rewrite.path:
        return path
    if rewrite.path.full is not None:
        query = path.partition("?")[2]
        return rewrite.path.full + (f"?{query}" if query else "")
    for m in route.matches:
        prefix = m.path.path_prefix if m.path else None
        if prefix and path.startswith(prefix):
            rest = path[len(prefix.rstrip("/")) :]
            new = (rewrite.path.prefix or "").rstrip("/") + rest
            return new if new.startswith("/") else "/" + new
    return path


def models_listing(route: ResolvedRoute, allowed: list[str] | None = None) -> bytes:
    """``GET /v1/models``, answered from the route's configured providers: only those the caller
    may use when authz restricted them (``allowed``)."""
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": up.kind}
        for model, up in route.models()
        if allowed is None or model in allowed
    ]
    return orjson.dumps({"object": "list", "data": data})


def require_json(headers: dict[str, str]) -> None:
    """The LLM APIs take JSON bodies only, said so by ``content-type: application/json``.

    That is what keeps a hostile web page from spending the gateway's provider keys: a browser
    sends a cross-origin POST without asking first only with a "simple" content type (text/plain,
    a form, multipart) or none, and this refuses those; for application/json it must ask first
    (a CORS preflight), which Envoy answers per the route's ``cors`` policy, and without one
    refuses. SDKs and ``curl -H 'content-type: application/json'`` send it."""
    sent = headers.get("content-type", "")
    if sent.split(";", 1)[0].strip().lower() != "application/json":
        shown = f"{sent[:80]!r}" if sent else "none"
        raise GatewayError(
            415,
            f"send the request body as JSON with content-type: application/json (this request's: {shown})",
            code="unsupported_media_type",
        )


def _missing(param: str) -> GatewayError:
    return GatewayError(
        400, f"missing required parameter: '{param}'", code="missing_required_parameter", param=param
    )


# What an empty body should have been, per API.
_EXPECTED_BODY = {
    "completions": 'a JSON chat completions request: {"model": ..., "messages": [...]}',
    "messages": 'a JSON Messages request: {"model": ..., "max_tokens": ..., "messages": [...]}',
    "embeddings": 'a JSON embeddings request: {"model": ..., "input": ...}',
}


def empty_body(api: str) -> GatewayError:
    return GatewayError(
        400, f"the request body is empty; send {_EXPECTED_BODY.get(api, 'a JSON object')}", code="empty_body"
    )


def parse_body(route: ResolvedRoute, api: str, body: bytes) -> dict[str, Any]:
    """The parsed body of an LLM API request, checked against its API's shape (``extproc.schema``),
    so that translators and stages get well-typed values; raises GatewayError (400) with the reason."""
    if not body.strip():
        raise empty_body(api)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_json")
    schema.check_depth(body, parsed)
    schema.validate(api, parsed)
    if api in ("completions", "messages") and not parsed["messages"]:
        raise GatewayError(400, "'messages' must be a non-empty array", code="invalid_type", param="messages")
    # The route supplies a model when every provider names one or its ai policy does.
    if not parsed.get("model") and not route_facts.of(route).model_from_config:
        raise _missing("model")
    return parsed
