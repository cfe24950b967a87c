"""Router-level phase: once per client request, before Envoy picks an upstream.

Lifecycle, top to bottom:
1. request headers: note path and method; a body-less request (``GET .../models``)
   is answered here.
2. request body: parse and validate the client's API request, and tell the
   upstream phase (dynamic metadata, which clients cannot set) which API it is
   and which path the client asked for.
Errors become the client API's error JSON with the right status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from extproc.errors import GatewayError
from extproc.gateway import Gateway, ResolvedRoute
from extproc.headers import API, PATH, ROUTE

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
    """Which API a path speaks: the route's ``routes`` map wins, then the path's suffix."""
    bare = path.split("?", 1)[0].rstrip("/")
    for backend in route.backends:
        table = backend.upstreams[0].routes if backend.upstreams else None
        if table:
            for suffix, kind in table.items():
                if suffix != "*" and bare.endswith(suffix.rstrip("/")):
                    return kind
            if "*" in table:
                return table["*"]
    for suffix, api in _SUFFIX_API:
        if bare.endswith(suffix):
            return api
    return "passthrough"


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


@dataclass
class RouterRequest:
    route: ResolvedRoute
    method: str
    path: str
    api: str


def start(gw: Gateway, route_name: str, method: str, path: str) -> RouterRequest:
    route = gw.routes_by_id.get(route_name.split("#", 1)[0])
    if route is None:
        raise GatewayError(404, f"no route for {path}", code="route_not_found")
    return RouterRequest(route=route, method=method, path=path, api=client_api(route, path))


def models_listing(req: RouterRequest) -> bytes:
    """``GET /v1/models``, answered from the route's configured providers."""
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": up.kind}
        for model, up in req.route.models()
    ]
    return orjson.dumps({"object": "list", "data": data})


def routing_metadata(req: RouterRequest) -> dict[str, str]:
    return {API: req.api, PATH: rewritten_path(req.route, req.path), ROUTE: req.route.id}


def validate_body(req: RouterRequest, body: bytes) -> dict[str, Any] | None:
    """The parsed body for the AI APIs; raises GatewayError (400) with the reason."""
    if req.api == "passthrough":
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_json")
    if req.api in ("completions", "messages"):
        messages = parsed.get("messages")
        if messages is None:
            raise GatewayError(
                400,
                "missing required parameter: 'messages'",
                code="missing_required_parameter",
                param="messages",
            )
        if not isinstance(messages, list) or not messages:
            raise GatewayError(
                400, "'messages' must be a non-empty array", code="invalid_type", param="messages"
            )
    if req.api == "embeddings" and "input" not in parsed:
        raise GatewayError(
            400, "missing required parameter: 'input'", code="missing_required_parameter", param="input"
        )
    model = parsed.get("model")
    if model is not None and not isinstance(model, str):
        raise GatewayError(400, "'model' must be a string", code="invalid_type", param="model")
    if not model and not all(u.model for b in req.route.backends for u in b.upstreams):
        raise GatewayError(
            400, "missing required parameter: 'model'", code="missing_required_parameter", param="model"
        )
    return parsed
