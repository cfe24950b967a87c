"""Upstream phase: once per attempt, on routes with several providers, after Envoy picked one.

1. request headers: which endpoint (its metadata names the provider) and what the
   router phase decided (dynamic metadata: API, path, route, request id).
2. request body: translate for this provider, set path and credentials, and remove
   every header not on this provider's allowlist. Envoy keeps an attempt's header
   mutations on a retry, so an earlier attempt's headers are removed here too.
The answer is read by the router phase, which learns from Envoy which provider
answered. This phase asks for the response headers only when tracing samples the request:
the attempt's span ends there, or is handed to the router phase (telemetry/attempt_span.py).
"""

from __future__ import annotations

import orjson

from extproc import contracts
from extproc import headers as h
from extproc.errors import GatewayError
from extproc.gateway import Gateway, Upstream
from extproc.pipeline import outbound
from extproc.pipeline.reply import Reply
from extproc.pipeline.route_decision import forward_of, upstream_of_metadata
from extproc.pipeline.stream_route import is_relay_endpoint
from extproc.telemetry import runtime, tracing
from extproc.telemetry.attempt_span import AttemptSpan


class UpstreamProcessor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.api = "completions"
        self.upstream: Upstream | None = None
        self.decision = contracts.RouteDecision()
        self.method = "POST"
        self.headers: dict[str, str] = {}
        self.span: AttemptSpan | None = None
        self.tracestate = ""
        self.relayed = False  # this attempt goes to the stream relay, which must know the upstream

    async def request_headers(
        self,
        headers: dict[str, str],
        end_of_stream: bool,
        host_metadata: str,
        metadata: dict[str, str],
        attempt: int = 1,
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
        self.relayed = is_relay_endpoint(host_metadata)
        self.method, self.headers = headers.get(":method", "POST"), headers
        self.span = AttemptSpan.begin(runtime.current().tracer, metadata, attempt, up, self.api)
        self.tracestate = metadata.get(tracing.TRACESTATE_KEY, "")
        reply = Reply() if not end_of_stream else await self._reply(None, None)
        if self.span is not None and self.span.sampled:
            reply.response_header_mode = "SEND"
        return reply

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
        if self.relayed:
            out.set_headers[h.RELAY_UPSTREAM] = self.upstream.id
        if self.span is not None:
            out.set_headers.update(self.span.headers(self.tracestate))
            self.span.method, self.span.path = self.method, out.attempt.path
        return Reply(set_headers=out.set_headers, remove_headers=out.remove_headers, body=out.body)

    def response_headers(self, headers: dict[str, str]) -> Reply:
        """Only when traced: the attempt's status (a provider's own hand-over header never passes)."""
        if self.span is None:
            return Reply()
        status = int(headers.get(":status", "0") or 0)
        handoff = self.span.on_response(status)
        return Reply(set_headers=handoff, remove_headers=[] if handoff else [tracing.ATTEMPT_HEADER])

    def close(self) -> None:
        if self.span is not None:
            self.span.close()
