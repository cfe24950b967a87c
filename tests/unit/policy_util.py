"""CheckRequests as Envoy sends them to the authz sidecar, for the CEL and OPA unit tests."""

from __future__ import annotations

import json
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as pb

from extproc.authz.request import AuthRequest


def check_request(
    method: str = "POST",
    path: str = "/openai/v1/chat/completions",
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    *,
    content_type: str | None = "application/json",
    source: tuple[str, int] = ("10.1.2.3", 51234),
) -> pb.CheckRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    check = pb.CheckRequest()
    attrs = check.attributes
    attrs.source.address.socket_address.address = source[0]
    attrs.source.address.socket_address.port_value = source[1]
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 3000
    attrs.request.time.FromJsonString("2026-09-01T10:00:00.500Z")
    attrs.context_extensions["route"] = "r1"
    http = attrs.request.http
    http.id = "4711"
    http.method = method
    http.path = path
    http.host = "gw.example.com"
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    all_headers = {":authority": "gw.example.com", ":method": method, ":path": path, ":scheme": "http"}
    if content_type is not None:
        all_headers["content-type"] = content_type
    if raw:
        all_headers["content-length"] = str(len(raw))
        http.raw_body = raw
        http.size = len(raw)
    all_headers.update(headers or {})
    http.headers.update(all_headers)
    return check


def auth_request(*args: Any, **kwargs: Any) -> AuthRequest:
    """An AuthRequest for a route the sidecar does not know (the client API comes from the path)."""
    check = check_request(*args, **kwargs)
    http = check.attributes.request.http
    return AuthRequest(
        check=check,
        route=None,
        method=http.method,
        path=http.path,
        headers=dict(http.headers),
        body=http.raw_body,
        source_address=check.attributes.source.address.socket_address.address,
    )


def chat_body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
