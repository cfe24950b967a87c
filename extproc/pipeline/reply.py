"""What a processor answers for one Envoy message, before it becomes protobuf (server.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from extproc.errors import GatewayError, error_body


@dataclass
class Immediate:
    """Answer the client now; Envoy sends nothing (more) to the provider."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    details: str = "gateway"


@dataclass
class Reply:
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # None: the body goes on unchanged
    metadata: dict[str, str] | None = None  # dynamic metadata in the gateway's namespace
    response_header_mode: str | None = None  # SEND: have Envoy show us the response (request headers only)
    response_body_mode: str | None = None  # NONE, STREAMED, BUFFERED (response headers only)
    immediate: Immediate | None = None
    # A streamed response body (Envoy's FULL_DUPLEX_STREAMED mode: ``body`` is what the client
    # gets for this chunk, b"" for nothing), and whether the client's stream ends with it: the
    # gateway may end a stream before the provider does (stream_errors.py).
    streamed: bool = False
    end_of_stream: bool = False
    # Envoy matches the route again after this reply's header changes (a stream's relay twin).
    clear_route_cache: bool = False


def error_reply(api: str, err: GatewayError) -> Reply:
    headers = {"content-type": "application/json", **(err.headers or {})}
    body = error_body(api, err.status, err.message, err.code, err.param)
    return Reply(immediate=Immediate(err.status, body, headers, f"gateway_{err.code or 'error'}"))
