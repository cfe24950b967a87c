"""What one attempt sends to its provider: body, path, credentials, and only allowed headers.

Used by the router phase on single-provider routes and by the upstream phase once
per attempt elsewhere. What reaches a provider is an allowlist: the headers named
here, the ones the gateway sets itself, and Envoy's pseudo-headers. Everything
else the client sent (its credentials, cookies, another provider's headers, an
earlier attempt's headers, which Envoy keeps across retries) is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from extproc import credentials, egress
from extproc.headers import CREDENTIAL_HEADERS

# Any provider may see these: content negotiation, trace context and the request id Envoy traces by.
_COMMON = frozenset(
    {"content-type", "content-length", "accept", "user-agent", "traceparent", "tracestate", "x-request-id"}
)

# A provider's own request headers that a client may choose (betas, for example).
PROVIDER_HEADERS: dict[str, frozenset[str]] = {
    "anthropic": frozenset({"anthropic-beta"}),
}

_JSON_APIS = {
    "completions": egress.chat_attempt,
    "messages": egress.messages_attempt,
    "embeddings": egress.embeddings_attempt,
}

_OPENAI_FORMAT = frozenset({"openai", "azure"})


def allowed_header(name: str, kind: str, reads_answer: bool, extra: tuple[str, ...] = ()) -> bool:
    if name.startswith(":") or name == "host":
        return True  # pseudo-headers: Envoy's own, rewritten by routing
    if name in CREDENTIAL_HEADERS:
        return False  # never, whatever a route allows
    if name == "accept-encoding":
        # The gateway reads LLM answers (usage, translation): plain bodies are read soonest.
        # A provider that compresses anyway is still decoded.
        return not reads_answer
    if name == "content-encoding":
        # Only beside the body it describes: a passthrough body goes as the client sent it; an
        # LLM request's body was decoded by the router phase (pipeline.encoding) or is ours.
        return not reads_answer
    if name in _COMMON or name in PROVIDER_HEADERS.get(kind, ()):
        return True
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in extra)


# allowed_header's answers by (name, kind, reads_answer, extra): header names repeat from request
# to request, and the checks cost about a microsecond a header. Bounded: names come from clients.
_ALLOWED_MAX = 4096
_allowed: dict[tuple[str, str, bool, tuple[str, ...]], bool] = {}


def _allowed_cached(name: str, kind: str, reads_answer: bool, extra: tuple[str, ...]) -> bool:
    key = (name, kind, reads_answer, extra)
    found = _allowed.get(key)
    if found is None:
        if len(_allowed) >= _ALLOWED_MAX:
            _allowed.clear()
        found = _allowed[key] = allowed_header(name, kind, reads_answer, extra)
    return found


@dataclass
class Outbound:
    set_headers: dict[str, str]
    remove_headers: list[str]
    body: bytes | None  # None: the body Envoy holds goes as it is
    attempt: egress.Attempt


def may_translate(up: egress.Upstream, api: str) -> bool:
    """Whether this provider's answers to ``api`` come back in another format than the client's."""
    if api in ("passthrough", "models"):
        return False
    if api == "messages":
        return up.kind != "anthropic"
    if api == "completions":
        return up.kind not in _OPENAI_FORMAT
    return True  # embeddings: every non-OpenAI family is translated


def plan(up: egress.Upstream, api: str, parsed: dict[str, Any] | None, client_path: str) -> egress.Attempt:
    """The attempt for this provider: path, translated body and how to read the answer."""
    if parsed is not None and api in _JSON_APIS:
        return _JSON_APIS[api](up, parsed)
    return egress.passthrough_attempt(up, client_path)


async def build(
    up: egress.Upstream,
    api: str,
    method: str,
    client_path: str,
    parsed: dict[str, Any] | None,
    body: bytes | None,
    request_headers: dict[str, str],
    forward: tuple[str, ...] = (),
) -> Outbound:
    attempt = plan(up, api, parsed, client_path)
    set_headers = {":path": attempt.path}
    if attempt.body is not None:  # a body of our own making
        set_headers["content-type"] = "application/json"
    sent = attempt.body if attempt.body is not None else body  # SigV4 signs the bytes that go
    if sent is not None:
        # Always: Envoy keeps an earlier attempt's content-length on a retry, and the client's
        # own body may be shorter than what that attempt translated.
        set_headers["content-length"] = str(len(sent))
    set_headers.update(await credentials.credential_headers(up, method, attempt.path, sent))
    reads_answer = api in _JSON_APIS
    kind = up.kind
    remove = [
        name
        for name in request_headers
        if name not in set_headers and not _allowed_cached(name, kind, reads_answer, forward)
    ]
    return Outbound(set_headers, remove, attempt.body, attempt)
