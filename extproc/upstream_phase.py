"""Upstream-level phase: once per attempt, after Envoy picked an endpoint.

Lifecycle, top to bottom:
1. request headers: which endpoint (its metadata names the provider) and which
   client API (the router phase's dynamic metadata).
2. request body: translate for this provider, set path and credentials, strip
   the client's credentials and the internal headers.
3. response headers: stream translation for ``stream && 200``, pass native
   answers through untouched.
4. response body: translate back to the client's format (chunk by chunk when
   streaming), provider errors into the client's error shape.
Everything is recomputed per attempt: Envoy keeps the previous attempt's header
mutations on a retry, so nothing may depend on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc import egress
from extproc.errors import GatewayError
from extproc.gateway import Gateway, Upstream
from extproc.headers import API, CREDENTIAL_HEADERS, INTERNAL_HEADERS, PATH

_UPSTREAM_ID = re.compile(r'key: "upstream"\s+value \{\s*string_value: "([^"]+)"')


def upstream_from_metadata(gw: Gateway, metadata_text: str) -> Upstream:
    """The endpoint's metadata arrives as protobuf text; it carries our upstream id."""
    m = _UPSTREAM_ID.search(metadata_text)
    up = gw.upstreams_by_id.get(m.group(1)) if m else None
    if up is None:
        raise GatewayError(
            500, "the gateway could not identify the upstream endpoint", code="gateway_internal"
        )
    return up


@dataclass
class UpstreamRequest:
    upstream: Upstream
    api: str
    method: str
    client_path: str
    attempt: egress.Attempt | None = None
    status: int = 0
    stream: Any = None
    error_chunks: list[bytes] = field(default_factory=list)


def start(gw: Gateway, metadata_text: str, routing: dict[str, str], method: str) -> UpstreamRequest:
    up = upstream_from_metadata(gw, metadata_text)
    if API not in routing:
        raise GatewayError(500, "the router phase left no routing metadata", code="gateway_internal")
    return UpstreamRequest(upstream=up, api=routing[API], method=method, client_path=routing.get(PATH, "/"))


# Provider kinds that answer in OpenAI's format.
_OPENAI_FORMAT = frozenset({"openai", "azure"})


def needs_response(up: Upstream, api: str) -> bool:
    """Whether the provider's answer must come back through us to be translated.

    Decided at request headers, so Envoy does not even send us the response
    (a gRPC round trip) when the client and the provider speak the same format.
    """
    if api == "passthrough":
        return False
    if api == "messages":
        return up.kind != "anthropic"
    return up.kind not in _OPENAI_FORMAT


def prepare(
    req: UpstreamRequest, body: bytes | None, parsed: dict[str, Any] | None = None
) -> tuple[dict[str, str], list[str], bytes | None]:
    """Headers to set, headers to remove and the body for this attempt."""
    up = req.upstream
    if body is not None and req.api in ("completions", "messages") and parsed is None:
        parsed = orjson.loads(body)
    if req.api == "completions" and parsed is not None:
        attempt = egress.chat_attempt(up, parsed)
    elif req.api == "messages" and parsed is not None:
        attempt = egress.messages_attempt(up, parsed)
    else:
        attempt = egress.passthrough_attempt(up, req.client_path, body)
    req.attempt = attempt
    set_headers = {":path": attempt.path}
    if attempt.body is not None:
        set_headers["content-length"] = str(len(attempt.body))
        if req.api != "passthrough":
            set_headers["content-type"] = "application/json"
    set_headers.update(egress.credential_headers(up, req.method, attempt.path, attempt.body))
    remove = [h for h in (*CREDENTIAL_HEADERS, *INTERNAL_HEADERS, "accept-encoding") if h not in set_headers]
    return set_headers, remove, attempt.body


def on_response_headers(req: UpstreamRequest, status: int) -> tuple[str, dict[str, str], list[str]]:
    """Returns the response body mode (NONE, STREAMED, BUFFERED) and header changes.

    Headers change here, not with the body: once the mode switches, Envoy has
    already let the response headers go and ignores header mutations on the body.
    """
    req.status = status
    attempt = req.attempt
    if attempt is None or not attempt.translate_response:
        return "NONE", {}, []
    if status == 200 and attempt.stream:
        assert attempt.module is not None
        req.stream = attempt.module.ChatStream(attempt.model, attempt.include_usage, created=egress.now())
        return "STREAMED", {"content-type": "text/event-stream"}, ["content-length", "content-encoding"]
    # The translated body has another length: Envoy sends it chunked.
    return "BUFFERED", {"content-type": "application/json"}, ["content-length", "content-encoding"]


def on_response_chunk(req: UpstreamRequest, chunk: bytes, end: bool) -> bytes:
    """A streamed response chunk, translated to the client's stream format."""
    out = req.stream.feed(chunk) if chunk else b""
    if end:
        out += req.stream.finish()
    return out


def on_response_body(req: UpstreamRequest, body: bytes) -> tuple[bytes, dict[str, str]]:
    """A whole (buffered) response: translated answer, or the provider's error in the client's shape."""
    attempt = req.attempt
    assert attempt is not None and attempt.module is not None
    headers = {"content-type": "application/json"}
    if req.status == 200:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(
                502, "the provider answered with a body that is not JSON", code="bad_upstream_response"
            ) from None
        out = orjson.dumps(attempt.module.chat_response(parsed, attempt.model, created=egress.now()))
    else:
        _, err = attempt.module.error_response(req.status, body)
        out = orjson.dumps(err)
    headers["content-length"] = str(len(out))
    return out, headers
