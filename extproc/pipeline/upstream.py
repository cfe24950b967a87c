"""Upstream phase: once per attempt, on routes with several providers, after Envoy picked one.

1. request headers: which endpoint (its metadata names the provider) and what the
   router phase decided (dynamic metadata: API, path, route, request id).
2. request body: translate for this provider, set path and credentials, and remove
   every header not on this provider's allowlist. Envoy keeps an attempt's header
   mutations on a retry, so an earlier attempt's headers are removed here too.
The answer is read by the router phase, which learns from Envoy which provider
answered: this phase never asks for the response.
"""

from __future__ import annotations

import orjson

from extproc import headers as h
from extproc.errors import GatewayError
from extproc.gateway import Gateway, Upstream
from extproc.pipeline import outbound
from extproc.pipeline.reply import Reply
from extproc.pipeline.router import forward_of, upstream_of_metadata


class UpstreamProcessor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.api = "completions"
        self.upstream: Upstream | None = None
        self.decision: dict[str, str] = {}
        self.method = "POST"
        self.headers: dict[str, str] = {}

    async def request_headers(
        self, headers: dict[str, str], end_of_stream: bool, host_metadata: str, decision: dict[str, str]
    ) -> Reply:
        up = upstream_of_metadata(self.gw, host_metadata)
        if up is None:
            raise GatewayError(
                500, "the gateway could not identify the upstream endpoint", code="gateway_internal"
            )
        if h.API not in decision:
            raise GatewayError(500, "the router phase left no routing metadata", code="gateway_internal")
        self.upstream, self.decision, self.api = up, decision, decision[h.API]
        self.method, self.headers = headers.get(":method", "POST"), headers
        if not end_of_stream:
            return Reply()
        return self._reply(None, None)

    async def request_body(self, body: bytes) -> Reply:
        parsed = orjson.loads(body) if self.api in ("completions", "messages", "embeddings") else None
        return self._reply(parsed, body)

    def _reply(self, parsed: dict | None, body: bytes | None) -> Reply:
        assert self.upstream is not None
        route = self.gw.routes_by_id.get(self.decision.get(h.ROUTE, ""))
        forward = forward_of(route) if route is not None else ()
        path = self.decision.get(h.PATH, "/")
        out = outbound.build(self.upstream, self.api, self.method, path, parsed, body, self.headers, forward)
        return Reply(set_headers=out.set_headers, remove_headers=out.remove_headers, body=out.body)
