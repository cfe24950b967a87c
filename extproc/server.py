"""The ext_proc gRPC service: Envoy's messages in, the processors' replies out as protobuf.

Envoy runs this filter twice (DESIGN.md): at router level once per request
(``pipeline.router``) and at upstream level once per attempt (``pipeline.upstream``).
The filter config marks each stream with ``x-gw-phase`` gRPC metadata. This module
only dispatches and converts; no state outlives a stream, so any number of worker
processes can serve any Envoy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.contracts import IDENTITY_KEY
from extproc.errors import GatewayError
from extproc.gateway import Gateway
from extproc.grpc_serve import serve_grpc
from extproc.guardrails import http as guard_http
from extproc.headers import AUTHZ_NAMESPACE, METADATA_NAMESPACE, REQUEST_FACTS, STREAM_FLAG
from extproc.limits.context import LimitsContext
from extproc.pipeline import stages
from extproc.pipeline.reply import Reply, error_reply
from extproc.pipeline.router import RouterProcessor
from extproc.pipeline.stage import Stage
from extproc.pipeline.upstream import UpstreamProcessor
from extproc.telemetry.rejected import RejectedLog

log = logging.getLogger("gateway.extproc")

_ATTRS = "envoy.filters.http.ext_proc"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_MODE = processing_mode_pb2.ProcessingMode
# A streamed answer goes FULL_DUPLEX_STREAMED: Envoy sends the client only what the sidecar sends
# back, when it sends it, so the sidecar can end the client's stream on its own (a stalled provider,
# the stream's maximum) with an error event. Envoy requires trailers to be sent in that mode.
_BODY_MODE = {"NONE": _MODE.NONE, "STREAMED": _MODE.FULL_DUPLEX_STREAMED, "BUFFERED": _MODE.BUFFERED}
# A full processing mode, for ``mode_override`` at request headers (Envoy replaces the whole mode).
_WITH_RESPONSE = _MODE(
    request_header_mode=_MODE.SEND,
    request_body_mode=_MODE.BUFFERED,
    request_trailer_mode=_MODE.SKIP,
    response_header_mode=_MODE.SEND,
    response_body_mode=_MODE.NONE,
    response_trailer_mode=_MODE.SKIP,
)
_INTERNAL = GatewayError(500, "internal gateway error", code="gateway_internal")


def _headers(msg: pb.HttpHeaders) -> dict[str, str]:
    # Envoy sends raw_value; an empty one (never a non-empty one) decodes falsy and falls back to
    # value. One attribute read per header, not two: about half the time of the conditional.
    return {h.key: h.raw_value.decode("latin-1") or h.value for h in msg.headers.headers}


def _attributes(req: pb.ProcessingRequest) -> dict[str, str]:
    if _ATTRS not in req.attributes:
        return {}
    fields = req.attributes[_ATTRS].fields
    out = {}
    for name in fields:
        value = fields[name]
        kind = value.WhichOneof("kind")
        out[name] = value.string_value if kind == "string_value" else str(int(value.number_value))
    return out


def _set_headers(options: Any, headers: dict[str, str]) -> None:
    """Each header as an OVERWRITE_IF_EXISTS_OR_ADD option, filled in place (building a HeaderValue
    and copying it into the option costs about twice as much)."""
    add = options.add
    for key, value in headers.items():
        header = add(append_action=_OVERWRITE).header
        header.key = key
        header.raw_value = value.encode()


def _set_metadata(resp: pb.ProcessingResponse, metadata: dict[str, str]) -> None:
    """``resp.dynamic_metadata.update({METADATA_NAMESPACE: metadata})``, without the pure-Python
    Struct.update for the string values the processors write (a third of the time)."""
    fields = resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
    for key, value in metadata.items():
        if isinstance(value, str):
            fields[key].string_value = value
        else:
            resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.update({key: value})


def _decision(req: pb.ProcessingRequest) -> dict[str, str]:
    ns = req.metadata_context.filter_metadata.get(METADATA_NAMESPACE)
    return {k: v.string_value for k, v in ns.fields.items()} if ns is not None else {}


def _identity(req: pb.ProcessingRequest) -> str | None:
    """The identity authz put in its own namespace (None: the route has no auth policy)."""
    ns = req.metadata_context.filter_metadata.get(AUTHZ_NAMESPACE)
    value = ns.fields.get(IDENTITY_KEY) if ns is not None else None
    return value.string_value if value is not None else None


def _stream_flag(req: pb.ProcessingRequest) -> bool | None:
    """The body's ``stream`` as Envoy read it before this message (render/answer_log.py): True or
    False, None when Envoy did not say or it is not a boolean."""
    ns = req.metadata_context.filter_metadata.get(REQUEST_FACTS)
    value = ns.fields.get(STREAM_FLAG) if ns is not None else None
    return value.bool_value if value is not None and value.WhichOneof("kind") == "bool_value" else None


def _common(resp: pb.ProcessingResponse, kind: str) -> pb.CommonResponse:
    common: pb.CommonResponse = getattr(resp, kind).response
    common.SetInParent()
    return common


def to_proto(kind: str, reply: Reply) -> pb.ProcessingResponse:
    """One processor reply as the ProcessingResponse for a message of ``kind``."""
    resp = pb.ProcessingResponse()
    if reply.immediate is not None:
        imm = reply.immediate
        resp.immediate_response.status.code = imm.status  # type: ignore[assignment]
        resp.immediate_response.body = imm.body
        resp.immediate_response.details = imm.details
        _set_headers(resp.immediate_response.headers.set_headers, imm.headers)
        if reply.metadata:  # the access log names the request even when the gateway answered it
            _set_metadata(resp, reply.metadata)
        return resp
    if kind in ("request_trailers", "response_trailers"):
        getattr(resp, kind).SetInParent()
        return resp
    common = _common(resp, kind)
    if reply.set_headers:
        _set_headers(common.header_mutation.set_headers, reply.set_headers)
    if reply.remove_headers:
        common.header_mutation.remove_headers.extend(reply.remove_headers)
    if reply.streamed:
        streamed = common.body_mutation.streamed_response
        streamed.body = reply.body or b""
        streamed.end_of_stream = reply.end_of_stream
    elif reply.body is not None:
        common.body_mutation.body = reply.body
    if reply.metadata:
        _set_metadata(resp, reply.metadata)
    if reply.clear_route_cache:
        common.clear_route_cache = True
    if reply.response_header_mode == "SEND":
        resp.mode_override.CopyFrom(_WITH_RESPONSE)
    if reply.response_body_mode is not None:
        resp.mode_override.response_body_mode = _BODY_MODE[reply.response_body_mode]
        if reply.response_body_mode == "STREAMED":
            resp.mode_override.response_trailer_mode = _MODE.SEND
    return resp


_TIMED_OUT = object()


class _Inbox:
    """Envoy's messages on one stream, or ``_TIMED_OUT`` when the processor's deadline passes first.

    Without a deadline it is a plain read. With one the read runs as a task that a timeout leaves
    pending (never cancelled mid-read), and the next call goes on waiting for the same message."""

    def __init__(self, messages: AsyncIterator[pb.ProcessingRequest]) -> None:
        self._messages = messages.__aiter__()
        self._pending: asyncio.Future[pb.ProcessingRequest | None] | None = None

    async def next(self, deadline: float | None) -> pb.ProcessingRequest | object | None:
        if deadline is None and self._pending is None:
            return await anext(self._messages, None)
        if deadline is not None and time.monotonic() >= deadline:
            return _TIMED_OUT  # passed while a message was being handled: it must not wait for one more
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._messages, None))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait((self._pending,), timeout=timeout)
        if not done:
            return _TIMED_OUT
        pending, self._pending = self._pending, None
        return pending.result()

    def close(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(
        self,
        gateway: Gateway,
        stages_of: dict[str, list[Stage]] | None = None,
        limits: LimitsContext | None = None,
    ) -> None:
        self.gateway = gateway
        # One store, policy-file watcher and remote channel per process, shared by the routes.
        self.limits = limits or LimitsContext(gateway, Path.cwd())
        # Stages are built once per route and shared by its requests; guardrail calls must end
        # within Envoy's wait for each ext_proc reply.
        guard_http.set_budget(gateway.sidecar_timeout)
        stages_of = stages_of or {route.id: stages.for_route(route, self.limits) for route in gateway.routes}
        self.pipelines = {rid: stages.RoutePipeline.of(st) for rid, st in stages_of.items()}

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        metadata = dict(context.invocation_metadata() or ())
        phase = metadata.get("x-gw-phase", "router")
        if phase == "upstream":
            async for resp in self._upstream(request_iterator, context):
                yield resp
        else:
            # Envoy's gRPC client names its span of this stream here when Envoy traces.
            async for resp in self._router(request_iterator, metadata.get("traceparent")):
                yield resp

    async def _router(
        self, messages: AsyncIterator[pb.ProcessingRequest], trace_parent: str | None = None
    ) -> AsyncIterator[pb.ProcessingResponse]:
        proc = RouterProcessor(self.gateway, self.pipelines)
        proc.completion.after_reply = True
        inbox = _Inbox(messages)
        try:
            while (msg := await inbox.next(proc.deadline())) is not None:
                if msg is _TIMED_OUT:
                    # Sent unasked: Envoy takes an immediate response, or a streamed body chunk,
                    # at any time (ext_proc's full-duplex mode).
                    yield to_proto("response_body", await self._timed_out(proc))
                    continue
                assert isinstance(msg, pb.ProcessingRequest)
                kind = msg.WhichOneof("request")
                try:
                    if kind == "request_headers":
                        attrs = _attributes(msg)
                        reply = await proc.request_headers(
                            _headers(msg.request_headers),
                            msg.request_headers.end_of_stream,
                            attrs.get("xds.route_name", ""),
                            _identity(msg),
                            trace_parent,
                            _stream_flag(msg),
                        )
                    elif kind == "request_body":
                        reply = await proc.request_body(msg.request_body.body)
                    elif kind == "response_headers":
                        reply = await proc.response_headers(_headers(msg.response_headers), _attributes(msg))
                    elif kind == "response_body":
                        body = msg.response_body
                        reply = await proc.response_body(body.body, body.end_of_stream)
                    elif kind == "response_trailers":
                        reply = await proc.response_trailers()
                    else:
                        reply = Reply()
                except GatewayError as err:
                    reply = await proc.fail(err)
                except Exception:
                    log.exception("router phase failed")
                    reply = await proc.fail(_INTERNAL)
                yield to_proto(kind or "", reply)
                # Resumed once grpc has taken the reply: the stages that complete the exchange
                # run now, off the answer's path (a stream cut first: proc.close runs them).
                await proc.completion.run()
        finally:
            inbox.close()
            await proc.close()

    @staticmethod
    async def _timed_out(proc: RouterProcessor) -> Reply:
        try:
            return await proc.timed_out()
        except Exception:
            log.exception("router phase failed at a stream deadline")
            return await proc.fail(_INTERNAL)

    async def _upstream(
        self, messages: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext | None = None
    ) -> AsyncIterator[pb.ProcessingResponse]:
        proc = UpstreamProcessor(self.gateway)
        if context is not None:
            # An attempt Envoy resets (connection refused, per-try timeout) may cancel this stream
            # between messages, where the generator's own ``finally`` would wait for the collector.
            context.add_done_callback(lambda _: proc.close())
        try:
            async for msg in messages:
                kind = msg.WhichOneof("request")
                try:
                    if kind == "request_headers":
                        attrs = _attributes(msg)
                        reply = await proc.request_headers(
                            _headers(msg.request_headers),
                            msg.request_headers.end_of_stream,
                            attrs.get("xds.upstream_host_metadata", ""),
                            _decision(msg),
                            int(attrs.get("upstream.request_attempt_count") or 1),
                        )
                    elif kind == "request_body":
                        reply = await proc.request_body(msg.request_body.body)
                    elif kind == "response_headers":  # asked for when the attempt is traced
                        reply = proc.response_headers(_headers(msg.response_headers))
                    else:
                        reply = Reply()
                except GatewayError as err:
                    reply = error_reply(proc.api, err)
                except Exception:
                    log.exception("upstream phase failed")
                    reply = error_reply(proc.api, _INTERNAL)
                yield to_proto(kind or "", reply)
        finally:
            proc.close()


async def serve(
    gateway: Gateway, listen: str, config_dir: Path | None = None, limits: LimitsContext | None = None
) -> None:
    """``config_dir``: where relative policy files (``rateLimits.file``) are; the config's folder.
    ``limits``: given when the admin API manages the same store and files (extproc/cli.py)."""
    limits = limits or LimitsContext(gateway, config_dir or Path.cwd())
    processor = ExternalProcessor(gateway, limits=limits)
    limits.start()

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
        # Envoy's gRPC access log of the requests refused before the pipeline (their usage records).
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(RejectedLog(gateway), server)

    try:
        await serve_grpc("extproc", listen, register)
    finally:
        await limits.close()
