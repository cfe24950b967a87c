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

from extproc import contracts
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
        self.decision = contracts.RouteDecision()
        self.method = "POST"
        self.headers: dict[str, str] = {}

    async def request_headers(
        self, headers: dict[str, str], end_of_stream: bool, host_metadata: str, metadata: dict[str, str]
    ) -> Reply:
        up = upstream_of_metadata(self.gw, host_metadata)
        if up is None:
            raise GatewayError(
                500, "the gateway could not identify the upstream endpoint", code="gateway_internal"
            )
        try:
            self.decision = contracts.decode_decision(metadata.get(contracts.DECISION_KEY, ""))
        except contracts.ContractError as exc:
            raise GatewayError(
                500, f"the router phase left no usable routing decision ({exc})", code="gateway_internal"
            ) from None
        self.upstream, self.api = up, contracts.client_api_name(self.decision.client_api)
        self.method, self.headers = headers.get(":method", "POST"), headers
        if not end_of_stream:
            return Reply()
        return await self._reply(None, None)

    async def request_body(self, body: bytes) -> Reply:
        parsed = orjson.loads(body) if self.api in ("completions", "messages", "embeddings") else None
        return await self._reply(parsed, body)

    async def _reply(self, parsed: dict | None, body: bytes | None) -> Reply:
        assert self.upstream is not None
        route = self.gw.routes_by_id.get(self.decision.route_id)
        forward = forward_of(route) if route is not None else ()
        path = self.decision.client_path or "/"
        out = await outbound.build(
            self.upstream, self.api, self.method, path, parsed, body, self.headers, forward
        )
        return Reply(set_headers=out.set_headers, remove_headers=out.remove_headers, body=out.body)
