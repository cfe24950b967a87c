"""The ext_proc gRPC service: Envoy's messages in, the two phases' answers out.

Envoy runs this filter twice (see DESIGN.md): at router level once per request
and at upstream level once per attempt. The filter config marks each stream
with ``x-gw-phase`` gRPC metadata. No state outlives a stream, so any number of
worker processes can serve any Envoy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc import router_phase, upstream_phase
from extproc.errors import GatewayError, error_body
from extproc.gateway import Gateway
from extproc.grpc_serve import serve_grpc
from extproc.headers import METADATA_NAMESPACE, PATH

log = logging.getLogger("gateway.extproc")

_ATTRS = "envoy.filters.http.ext_proc"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_BODY_MODE = {
    "NONE": processing_mode_pb2.ProcessingMode.NONE,
    "STREAMED": processing_mode_pb2.ProcessingMode.STREAMED,
    "BUFFERED": processing_mode_pb2.ProcessingMode.BUFFERED,
}


def _headers(msg: pb.HttpHeaders) -> dict[str, str]:
    return {h.key: (h.raw_value.decode("latin-1") if h.raw_value else h.value) for h in msg.headers.headers}


def _attribute(req: pb.ProcessingRequest, name: str) -> str:
    attrs = req.attributes.get(_ATTRS)
    if attrs is None or name not in attrs.fields:
        return ""
    return attrs.fields[name].string_value


def _set_routing(resp: pb.ProcessingResponse, routing: dict[str, str]) -> None:
    resp.dynamic_metadata.update({METADATA_NAMESPACE: routing})


def _routing(req: pb.ProcessingRequest) -> dict[str, str]:
    ns = req.metadata_context.filter_metadata.get(METADATA_NAMESPACE)
    return {k: v.string_value for k, v in ns.fields.items()} if ns is not None else {}


def _mutate(
    common: pb.CommonResponse, set_headers: dict[str, str], remove: list[str] | tuple[str, ...] = ()
) -> None:
    for key, value in set_headers.items():
        common.header_mutation.set_headers.add(
            header=base_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
        )
    common.header_mutation.remove_headers.extend(remove)


def immediate(api: str, err: GatewayError) -> pb.ProcessingResponse:
    """Answer the client directly with an error in its API's shape."""
    resp = pb.ProcessingResponse()
    resp.immediate_response.status.code = err.status  # type: ignore[assignment]
    resp.immediate_response.body = error_body(api, err.status, err.message, err.code, err.param)
    resp.immediate_response.details = f"gateway_{err.code or 'error'}"
    _set_immediate_headers(resp, {"content-type": "application/json"})
    return resp


def _set_immediate_headers(resp: pb.ProcessingResponse, headers: dict[str, str]) -> None:
    for key, value in headers.items():
        resp.immediate_response.headers.set_headers.add(
            header=base_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
        )


# Full processing modes, for ``mode_override`` (Envoy replaces the whole mode).
_MODE = processing_mode_pb2.ProcessingMode
_WITH_RESPONSE = _MODE(
    request_header_mode=_MODE.SEND,
    request_body_mode=_MODE.BUFFERED,
    request_trailer_mode=_MODE.SKIP,
    response_header_mode=_MODE.SEND,
    response_body_mode=_MODE.NONE,
    response_trailer_mode=_MODE.SKIP,
)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        phase = dict(context.invocation_metadata() or ()).get("x-gw-phase", "router")
        handler = self._upstream if phase == "upstream" else self._router
        async for resp in handler(request_iterator):
            yield resp

    # --- router level: once per client request ---------------------------

    async def _router(
        self, messages: AsyncIterator[pb.ProcessingRequest]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        """Policy for the request; on single-provider routes also the egress work.

        A route with one provider cannot fail over to another wire format, so
        this phase translates, sets credentials and translates the answer back
        itself (``exchange``); otherwise the upstream phase does, per attempt.
        """
        state: router_phase.RouterRequest | None = None
        exchange: upstream_phase.UpstreamRequest | None = None
        api = "completions"
        async for msg in messages:
            kind = msg.WhichOneof("request")
            try:
                if kind == "request_headers":
                    headers = _headers(msg.request_headers)
                    path = headers.get(":path", "/")
                    api = router_phase.api_of_path(path)
                    state = router_phase.start(
                        self.gateway, _attribute(msg, "xds.route_name"), headers.get(":method", "GET"), path
                    )
                    api = state.api
                    if msg.request_headers.end_of_stream:
                        yield self._router_bodyless(state)
                        continue
                    resp = pb.ProcessingResponse()
                    resp.request_headers.response.SetInParent()
                    direct = state.route.direct_upstream
                    if direct is not None and upstream_phase.needs_response(direct, state.api):
                        resp.mode_override.CopyFrom(_WITH_RESPONSE)
                    yield resp
                elif kind == "request_body":
                    assert state is not None
                    parsed = router_phase.validate_body(state, msg.request_body.body)
                    resp = pb.ProcessingResponse()
                    common = resp.request_body.response
                    common.SetInParent()
                    routing = router_phase.routing_metadata(state)
                    _set_routing(resp, routing)
                    direct = state.route.direct_upstream
                    if direct is not None:
                        exchange = upstream_phase.UpstreamRequest(
                            upstream=direct, api=state.api, method=state.method, client_path=routing[PATH]
                        )
                        set_headers, remove, body = upstream_phase.prepare(
                            exchange, msg.request_body.body, parsed
                        )
                        _mutate(common, set_headers, remove)
                        if body is not None:
                            common.body_mutation.body = body
                    yield resp
                elif kind in ("response_headers", "response_body") and exchange is not None:
                    yield _exchange_response(exchange, msg)
                else:
                    yield _continue(kind)
            except GatewayError as err:
                yield immediate(api, err)
            except Exception:
                log.exception("router phase failed")
                yield immediate(api, GatewayError(500, "internal gateway error", code="gateway_internal"))

    def _router_bodyless(self, state: router_phase.RouterRequest) -> pb.ProcessingResponse:
        if state.api == "models":
            resp = pb.ProcessingResponse()
            resp.immediate_response.status.code = 200  # type: ignore[assignment]
            resp.immediate_response.body = router_phase.models_listing(state)
            _set_immediate_headers(resp, {"content-type": "application/json"})
            return resp
        if state.api != "passthrough":
            raise GatewayError(
                405, f"{state.method} is not allowed on {state.path}; use POST", code="method_not_allowed"
            )
        resp = pb.ProcessingResponse()
        routing = router_phase.routing_metadata(state)
        _set_routing(resp, routing)
        common = resp.request_headers.response
        common.SetInParent()
        direct = state.route.direct_upstream
        if direct is not None:
            exchange = upstream_phase.UpstreamRequest(
                upstream=direct, api=state.api, method=state.method, client_path=routing[PATH]
            )
            set_headers, remove, _ = upstream_phase.prepare(exchange, None)
            _mutate(common, set_headers, remove)
        return resp

    # --- upstream level: once per attempt ---------------------------------

    async def _upstream(
        self, messages: AsyncIterator[pb.ProcessingRequest]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        state: upstream_phase.UpstreamRequest | None = None
        api = "completions"
        async for msg in messages:
            kind = msg.WhichOneof("request")
            try:
                if kind == "request_headers":
                    headers = _headers(msg.request_headers)
                    state = upstream_phase.start(
                        self.gateway,
                        _attribute(msg, "xds.upstream_host_metadata"),
                        _routing(msg),
                        headers.get(":method", "POST"),
                    )
                    api = state.api
                    resp = pb.ProcessingResponse()
                    common = resp.request_headers.response
                    common.SetInParent()
                    if msg.request_headers.end_of_stream:
                        set_headers, remove, _ = upstream_phase.prepare(state, None)
                        _mutate(common, set_headers, remove)
                    elif upstream_phase.needs_response(state.upstream, state.api):
                        resp.mode_override.CopyFrom(_WITH_RESPONSE)
                    yield resp
                elif kind == "request_body":
                    assert state is not None
                    set_headers, remove, body = upstream_phase.prepare(state, msg.request_body.body)
                    resp = pb.ProcessingResponse()
                    common = resp.request_body.response
                    _mutate(common, set_headers, remove)
                    if body is not None:
                        common.body_mutation.body = body
                    yield resp
                elif kind in ("response_headers", "response_body"):
                    assert state is not None
                    yield _exchange_response(state, msg)
                else:
                    yield _continue(kind)
            except GatewayError as err:
                yield immediate(api, err)
            except Exception:
                log.exception("upstream phase failed")
                yield immediate(api, GatewayError(500, "internal gateway error", code="gateway_internal"))


def _exchange_response(
    state: upstream_phase.UpstreamRequest, msg: pb.ProcessingRequest
) -> pb.ProcessingResponse:
    """The provider's answer, translated back to the client's format (either phase)."""
    resp = pb.ProcessingResponse()
    if msg.HasField("response_headers"):
        common = resp.response_headers.response
        common.SetInParent()
        headers = _headers(msg.response_headers)
        details = _attribute(msg, "response.code_details")
        if details and details != "via_upstream":
            # Envoy's own reply (timeout, no healthy upstream): already in the client's format.
            resp.mode_override.response_body_mode = _BODY_MODE["NONE"]
            return resp
        mode, set_headers, remove = upstream_phase.on_response_headers(state, headers)
        _mutate(common, set_headers, remove)
        resp.mode_override.response_body_mode = _BODY_MODE[mode]
        return resp
    common = resp.response_body.response
    body_msg = msg.response_body
    if state.stream is not None:
        common.body_mutation.body = upstream_phase.on_response_chunk(
            state, body_msg.body, body_msg.end_of_stream
        )
    else:
        body, set_headers = upstream_phase.on_response_body(state, body_msg.body)
        _mutate(common, set_headers, ("content-encoding",))
        common.body_mutation.body = body
    return resp


def _continue(kind: str | None) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    if kind in ("request_trailers", "response_trailers"):
        getattr(resp, kind).SetInParent()
    return resp


async def serve(gateway: Gateway, listen: str) -> None:
    await serve_grpc(
        "extproc",
        listen,
        lambda server: pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(gateway), server),
    )
