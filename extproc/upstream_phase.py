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
import zlib
from dataclasses import dataclass
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
    error_type: str | None = None
    stream: egress.StreamTranslator | None = None
    gunzip: Any = None  # a zlib decompressor while the provider's body is gzip-encoded


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
    if api in ("passthrough", "models"):
        return False
    if api == "messages":
        return up.kind != "anthropic"
    return up.kind not in _OPENAI_FORMAT


def prepare(
    req: UpstreamRequest, body: bytes | None, parsed: dict[str, Any] | None = None
) -> tuple[dict[str, str], list[str], bytes | None]:
    """Headers to set, headers to remove and the body for this attempt."""
    up = req.upstream
    if body is not None and req.api in _JSON_APIS and parsed is None:
        parsed = orjson.loads(body)
    if parsed is not None and req.api in _JSON_APIS:
        attempt = _JSON_APIS[req.api](up, parsed)
    else:
        attempt = egress.passthrough_attempt(up, req.client_path)
    req.attempt = attempt
    set_headers = {":path": attempt.path}
    if attempt.body is not None:  # a body of our own making
        set_headers["content-length"] = str(len(attempt.body))
        set_headers["content-type"] = "application/json"
    sent = attempt.body if attempt.body is not None else body  # SigV4 signs the bytes that go
    set_headers.update(egress.credential_headers(up, req.method, attempt.path, sent))
    strip = (*CREDENTIAL_HEADERS, *INTERNAL_HEADERS)
    if needs_response(up, req.api):
        # Plain bodies translate soonest (a compressing provider may hold stream chunks back);
        # gzip is still decoded when a provider sends it anyway.
        strip = (*strip, "accept-encoding")
    remove = [h for h in strip if h not in set_headers]
    return set_headers, remove, attempt.body


_JSON_APIS = {
    "completions": egress.chat_attempt,
    "messages": egress.messages_attempt,
    "embeddings": egress.embeddings_attempt,
}


def on_response_headers(
    req: UpstreamRequest, headers: dict[str, str]
) -> tuple[str, dict[str, str], list[str]]:
    """Returns the response body mode (NONE, STREAMED, BUFFERED) and header changes.

    Headers change here, not with the body: once the mode switches, Envoy has
    already let the response headers go and ignores header mutations on the body.
    """
    req.status = int(headers.get(":status", "0"))
    req.error_type = headers.get("x-amzn-errortype")
    attempt = req.attempt
    if attempt is None or attempt.answer is None:
        return "NONE", {}, []
    if headers.get("content-encoding", "").strip().lower() in ("gzip", "x-gzip"):
        req.gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise GatewayError(
            502,
            f"the provider answered with content-encoding {headers['content-encoding']!r}, which the gateway "
            "cannot translate",
            code="bad_upstream_response",
        )
    if req.status == 200 and attempt.stream:
        req.stream = attempt.answer.stream(egress.now())
        return "STREAMED", {"content-type": "text/event-stream"}, ["content-length", "content-encoding"]
    # The translated body has another length: Envoy sends it chunked.
    return "BUFFERED", {"content-type": "application/json"}, ["content-length", "content-encoding"]


def _decoded(req: UpstreamRequest, chunk: bytes, end: bool) -> bytes:
    if req.gunzip is None:
        return chunk
    try:
        out: bytes = req.gunzip.decompress(chunk)
        return out + req.gunzip.flush() if end else out
    except zlib.error:
        raise GatewayError(
            502, "the provider's gzip-encoded answer is corrupt", code="bad_upstream_response"
        ) from None


def on_response_chunk(req: UpstreamRequest, chunk: bytes, end: bool) -> bytes:
    """A streamed response chunk, translated to the client's stream format."""
    stream = req.stream
    if stream is None:  # already ended with an error event
        return b""
    try:
        data = _decoded(req, chunk, end)
    except GatewayError:
        # Mid-stream the status line is gone: the translator ends the stream with an error event.
        req.stream = None
        return stream.finish()
    out = stream.feed(data) if data else b""
    if end:
        out += stream.finish()
    return out


def on_response_body(req: UpstreamRequest, body: bytes) -> tuple[bytes, dict[str, str]]:
    """A whole (buffered) response: translated answer, or the provider's error in the client's shape."""
    attempt = req.attempt
    assert attempt is not None and attempt.answer is not None
    body = _decoded(req, body, True)
    if req.status == 200:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(
                502, "the provider answered with a body that is not JSON", code="bad_upstream_response"
            ) from None
        out = orjson.dumps(attempt.answer.response(parsed, egress.now()))
    else:
        _, err = attempt.answer.error(req.status, body, req.error_type)
        out = orjson.dumps(err)
    return out, {"content-type": "application/json", "content-length": str(len(out))}
