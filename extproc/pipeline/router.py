"""Router phase: once per client request. A request's whole life reads top to bottom here.

1. request headers: find the route and the client API; open the exchange; a body-less
   request (``GET .../models``, opt-in passthrough) is answered or sent on here.
2. request body: parse, run each stage's ``on_request`` (shaping, later entitlements,
   guardrails, limits), then either do the egress work (a single-provider route:
   no retry can change the wire format) or leave it to the upstream phase, which runs
   once per attempt, by recording the decision in dynamic metadata. Before the egress work,
   each stage's ``decide``: the answers to what ``on_request`` sent without waiting (the limit
   and budget reservations, one store call for both).
3. response headers: which provider answered (and after how many attempts); translate,
   observe or ignore the body.
4. response body: back to the client's format, chunk by chunk when streaming; usage
   is read on the way.
5. complete: every stage's ``on_complete`` runs once, whatever happened (``close``
   covers a stream that ends early). For an answer that ended well, once its last reply has
   gone to Envoy (``completion.py``): the client never waits for settling and the usage record.

Streams have deadlines of their own (``deadline``, ``timed_out``; README "Stream timeouts"):
until the provider's headers, the route's request timeout; then silence between chunks
(``streamIdleTimeout``) and the whole stream (``streamMaxDuration``), each ending the client's
stream with an error event in its format. Envoy's own timers for streams are set later, as a
backstop for a sidecar that cannot act.
"""

from __future__ import annotations

import inspect
import logging
import time

import orjson

from extproc import headers as h
from extproc.errors import GatewayError
from extproc.gateway import Gateway, Upstream
from extproc.pipeline import (
    answer_log,
    client_request,
    encoding,
    outbound,
    route_decision,
    route_facts,
    stream_route,
    trace_context,
)
from extproc.pipeline.answer import ResponseReader
from extproc.pipeline.attempts import attempts_of
from extproc.pipeline.completion import Completion
from extproc.pipeline.exchange import Exchange, new_request_id
from extproc.pipeline.identity import caller_identity
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.reply import Immediate, Reply, error_reply
from extproc.pipeline.stage import Needs, Stage
from extproc.pipeline.stages import EMPTY, RoutePipeline
from extproc.pipeline.stream_clock import StreamClock
from extproc.pipeline.stream_errors import ANTHROPIC_TIMEOUT

log = logging.getLogger("gateway.router")

# A stream whose body ended before its last event (a provider that stopped early, or a provider
# connection cut after the headers, which the stream relay ends cleanly).
TRUNCATED_RECORD = (
    "the provider's stream ended before its last event: its connection was closed or reset, "
    "or it stopped early"
)
_LLM_APIS = frozenset({"completions", "messages", "embeddings"})
_RESPONSE_NEEDS = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY  # enum.Flag's | costs microseconds
_NO_ROUTE = route_facts.RouteFacts(False, None, (), (), False, ())


class RouterProcessor:
    """One gRPC stream's worth of router-phase work; ``stages`` are the route's, built once."""

    def __init__(self, gw: Gateway, pipelines: dict[str, RoutePipeline]) -> None:
        self.gw = gw
        self.pipelines = pipelines
        self.ex: Exchange | None = None
        self.pipeline = EMPTY
        self.stages: list[Stage] = []
        self.api = "completions"  # the error shape until the route is known
        self.reader: ResponseReader | None = None
        self.codings: list[str] = []  # the client body's content-encoding, to undo
        # A stream's clock (monotonic seconds): when the request went to the provider, when the
        # provider last sent something, and the route's limits (request, idle, maximum).
        self.clock = StreamClock()
        self.route_name = ""  # the Envoy route that matched: a stream's relay twin is named by it
        self.facts = _NO_ROUTE
        self.completion = Completion()  # when the stages' on_complete run (completion.py)
        self.logged_format: str | None = None  # a whole answer left to Envoy's access log

    # 1 -------------------------------------------------------------------

    async def request_headers(
        self,
        headers: dict[str, str],
        end_of_stream: bool,
        route_name: str,
        identity: str | None = None,
        trace_parent: str | None = None,
        stream_flag: bool | None = None,
    ) -> Reply:
        path = headers.get(":path", "/")
        self.route_name = route_name
        self.api = client_request.api_of_path(path)
        route = self.gw.routes_by_id.get(route_name.split("#", 1)[0])
        if route is None:
            raise GatewayError(404, f"no route for {path}", code="route_not_found")
        self.facts = facts = route_facts.of(route)
        ex = Exchange(
            request_id=new_request_id(),
            route=route,
            api=self.api,
            method=headers.get(":method", "GET"),
            path=path,
            client_request_id=headers.get(h.CLIENT_REQUEST_ID),
            headers=headers,
        )
        self.ex = ex
        trace_context.begin(ex, trace_parent)
        ex.identity = caller_identity(route, identity)
        self.pipeline = self.pipelines.get(route.id, EMPTY)
        self.stages = self.pipeline.stages
        ex.api = self.api = client_request.client_api(route, path)
        if end_of_stream:
            return await self._bodyless(ex)
        if ex.api == "models":
            raise GatewayError(
                405, f"{ex.method} is not allowed on {path}; use GET", code="method_not_allowed"
            )
        if ex.api in _LLM_APIS:
            client_request.require_json(headers)
            # Refused before the body is read; a passthrough body goes on as sent, with its header.
            self.codings = encoding.codings(headers.get("content-encoding"))
            if self.codings and facts.needs_authz:
                raise encoding.not_on_checked_routes(self.codings)
        # Envoy said the answer will not stream (stream_flag): maybe its access log can carry it.
        self.logged_format = answer_log.format_for(self.gw, self.pipeline, facts, ex, stream_flag)
        wants = self._wants_response() and self.logged_format is None
        return Reply(response_header_mode="SEND" if wants else None)

    def _wants_response(self) -> bool:
        if self.pipeline.needs & _RESPONSE_NEEDS:
            return True
        return self.facts.translates(self.api)

    async def _bodyless(self, ex: Exchange) -> Reply:
        if ex.api == "models":
            if ex.method not in ("GET", "HEAD"):
                raise GatewayError(405, f"{ex.method} is not allowed on {ex.path}", code="method_not_allowed")
            body = client_request.models_listing(ex.route, ex.identity.get("allowed_models"))
            await self._finish(ex, 200, "ok")
            return Reply(immediate=Immediate(200, body, details="gateway_models"))
        if ex.api != "passthrough":
            if ex.method == "POST":  # a POST without a body: content-length 0, or none at all
                raise client_request.empty_body(ex.api)
            raise GatewayError(
                405, f"{ex.method} is not allowed on {ex.path}; use POST", code="method_not_allowed"
            )
        reply = route_decision.reply(ex)
        direct = self.facts.direct
        if direct is not None:
            await self._egress(reply, ex, direct, None, None, False)
        reply.response_header_mode = "SEND"
        return reply

    # 2 -------------------------------------------------------------------

    async def request_body(self, body: bytes) -> Reply:
        ex = self._exchange()
        parsed = None
        decoded = bool(self.codings)
        if decoded:
            body = encoding.decode(body, self.codings, self.gw.limits.max_request_bytes)
        if ex.api in _LLM_APIS:
            parsed = client_request.parse_body(ex.route, ex.api, body)
            ex.llm = LLMRequest(ex.api, parsed)
            ex.stream = ex.llm.stream
        for stage in self.stages:  # passthrough requests too: ex.llm is None there
            await stage.on_request(ex)
        # A stage rewrote the request: serialized once, after every stage has run.
        sent = orjson.dumps(ex.llm.body) if ex.llm is not None and ex.llm.changed else None
        if sent is None and decoded:
            sent = body  # the decoded bytes replace the encoded ones Envoy holds
        reply = route_decision.reply(ex)
        # The answers to what the stages asked without waiting (the limit stores' reservations,
        # one store call on a route with both). Before the egress work: a refused request is never
        # signed or sent.
        for stage in self.pipeline.deciding:
            await stage.decide(ex)
        direct = self.facts.direct
        if direct is not None:
            await self._egress(reply, ex, direct, parsed, body if sent is None else sent, sent is not None)
        elif sent is not None:
            reply.body = sent
            reply.set_headers["content-length"] = str(len(sent))
            if decoded:  # (the egress allowlist drops it on single-provider routes)
                reply.remove_headers.append("content-encoding")
        if self.logged_format is not None:  # its answer's facts come by Envoy's access log
            answer_log.park(reply, ex, self.stages, self.logged_format, self.gw.request_timeout)
        elif ex.stream:
            self._start_stream_clock(ex, reply)
            if self.gw.limits.stream_relay:
                stream_route.via_relay(reply, self.route_name, direct)
        return reply

    def _start_stream_clock(self, ex: Exchange, reply: Reply) -> None:
        """A stream's route timeout is its maximum (the route's own is for whole answers); Envoy's
        router reads it from this header and removes it."""
        reply.set_headers[h.UPSTREAM_TIMEOUT] = str(self.clock.start(ex.route, self.gw))

    async def _egress(
        self,
        reply: Reply,
        ex: Exchange,
        up: Upstream,
        parsed: dict | None,
        body: bytes | None,
        rewritten: bool,
    ) -> None:
        """The attempt's path, credentials, headers and body; ``rewritten``: ``body`` is not Envoy's."""
        assert reply.metadata is not None
        forward = self.facts.forward
        path = reply.metadata[h.PATH]
        out = await outbound.build(up, ex.api, ex.method, path, parsed, body, ex.headers, forward)
        reply.set_headers.update(out.set_headers)
        trace_context.direct_egress(ex, reply.set_headers, out.attempt.path)
        reply.remove_headers.extend(out.remove_headers)
        if out.body is not None:
            reply.body = out.body
        elif rewritten:
            reply.body = body  # its content-length is set by outbound.build
        self.reader = self._reader(ex, up, out.attempt)

    def _reader(self, ex: Exchange, up: Upstream, attempt: object) -> ResponseReader:
        wants = ex.llm.wants_usage_chunk if ex.llm is not None else False
        reader = ResponseReader(up, ex.api, attempt, wants)  # type: ignore[arg-type]
        reader.rewrites = self.pipeline.rewrites  # stages may change the answer's bytes
        return reader

    # 3 -------------------------------------------------------------------

    async def response_headers(self, headers: dict[str, str], attrs: dict[str, str]) -> Reply:
        ex = self._exchange()
        ex.first_byte = time.monotonic()
        ex.status = int(headers.get(":status", "0"))
        details = attrs.get("response.code_details", "")
        up = self.facts.direct or route_decision.upstream_of_metadata(
            self.gw, attrs.get("xds.upstream_host_metadata", "")
        )
        ex.upstream = up
        count = attrs.get("upstream.request_attempt_count", "")
        ex.attempts = attempts_of(ex.route, up, count, details, ex.status)
        if details and details != "via_upstream":
            # Envoy's own reply (timeout, no healthy upstream): already in the client's format.
            ex.error = details
            await self._finish(ex, ex.status, "envoy_error")
            return Reply(set_headers=dict(ex.response_headers), response_body_mode="NONE")
        if up is None:
            # Envoy always names the endpoint it used; without it the answer cannot be read safely.
            log.error("no upstream host metadata for request %s on route %s", ex.request_id, ex.route.name)
            raise GatewayError(
                502, "the gateway could not tell which provider answered", code="gateway_internal"
            )
        if self.reader is None:
            parsed = ex.llm.body if ex.llm is not None else None
            path = client_request.rewritten_path(ex.route, ex.path)
            self.reader = self._reader(ex, up, outbound.plan(up, ex.api, parsed, path))
        mode, set_headers, remove = self.reader.on_headers(headers)
        self.clock.last_chunk = ex.first_byte or 0.0
        set_headers = {**set_headers, **ex.response_headers, h.RESPONSE_REQUEST_ID: ex.request_id}
        remove = [*remove, *trace_context.answer_headers(ex, headers)]
        if mode == "NONE":
            await self._finish(ex, ex.status, "ok" if ex.status < 400 else "provider_error")
        return Reply(set_headers=set_headers, remove_headers=remove, response_body_mode=mode)

    # 4 -------------------------------------------------------------------

    async def response_body(self, body: bytes, end_of_stream: bool) -> Reply:
        ex = self._exchange()
        reader = self.reader
        assert reader is not None
        if body and ex.first_token is None:
            ex.first_token = time.monotonic()
        reply = Reply()
        if reader.streaming:
            self.clock.last_chunk = time.monotonic()
            out = reader.on_chunk(body, end_of_stream)
            # Envoy sends on only what this reply carries (full-duplex streaming): always bytes.
            reply.body = await self._chunk_stages(ex, out, out)
            reply.streamed, reply.end_of_stream = True, end_of_stream
        else:
            out, set_headers = reader.on_body(body)
            # Usage first: a stage that refuses the answer (a guardrail) still leaves it counted.
            ex.usage, ex.response_model = reader.usage, reader.response_model
            # The stages read the answer decoded (a gzip one too, when it goes out as it came).
            staged = await self._chunk_stages(ex, reader.body_read if out is None else out, out)
            if staged is not out and staged is not None:
                set_headers = {**set_headers, "content-length": str(len(staged))}
            reply.body = staged
            reply.set_headers.update(set_headers)
        if end_of_stream or not reader.streaming:
            reader.settle()
            ex.usage, ex.response_model = reader.usage, reader.response_model
            outcome = "ok" if ex.status < 400 else "provider_error"
            if reader.truncated:  # the client got an error event: the answer is not whole
                outcome, ex.error = "stream_cut", TRUNCATED_RECORD
            await self._finish(ex, ex.status, outcome, answered=True)
        return reply

    async def response_trailers(self) -> Reply:
        """The provider's trailers end its body (Envoy sends no end_of_stream chunk then). Nothing
        more may be sent for the body after them, so a translator's closing events are lost: no
        provider sends trailers on these APIs today."""
        ex = self._exchange()
        if self.reader is not None and not ex.completed:
            self.reader.settle()
            ex.usage, ex.response_model = self.reader.usage, self.reader.response_model
            await self._finish(ex, ex.status, "ok" if ex.status < 400 else "provider_error")
        return Reply()

    async def _chunk_stages(self, ex: Exchange, data: bytes, out: bytes | None) -> bytes | None:
        for stage in self.pipeline.chunk_stages:
            changed = stage.on_response_chunk(ex, data)
            if inspect.isawaitable(changed):  # a stage that calls out (a guardrail webhook)
                changed = await changed
            if changed is not data:
                data = out = changed
        return out

    # deadlines -----------------------------------------------------------

    def deadline(self) -> float | None:
        """When this stream must have moved on (monotonic seconds), or None: no deadline of ours."""
        ex, reader = self.ex, self.reader
        if ex is None or ex.completed:
            return None
        return self.clock.due(ex.started, ex.first_byte, reader is not None and reader.streaming)

    async def timed_out(self) -> Reply:
        """The deadline passed: a 504 before the stream has begun, else its end with an error event."""
        ex = self._exchange()
        reader = self.reader
        if ex.first_byte is None or reader is None or not reader.streaming:
            err = GatewayError(504, "the provider did not answer in time", code="provider_timeout")
            return await self.fail(err, "provider_error")
        code, message = self.clock.expired(ex.started)
        ended = reader.ended  # the client already had the last event: nothing was cut
        body = reader.end_with_error(message, code, ANTHROPIC_TIMEOUT)
        ex.usage, ex.response_model = reader.usage, reader.response_model
        if not ended:
            ex.error = message
        await self._finish(ex, ex.status, "ok" if ended else "stream_cut")
        return Reply(body=body, streamed=True, end_of_stream=True)

    # 5 -------------------------------------------------------------------

    async def fail(self, err: GatewayError, outcome: str = "gateway_error") -> Reply:
        """A gateway error at any step: the client's error shape, and the exchange completes."""
        reply = error_reply(self.api, err)
        if self.ex is not None:
            self.ex.error = err.message
            await self._finish(self.ex, err.status, outcome)
            assert reply.immediate is not None
            reply.immediate.headers[h.RESPONSE_REQUEST_ID] = self.ex.request_id
            reply.metadata = route_decision.envoy_keys(self.ex, self.ex.path)
        return reply

    async def close(self) -> None:
        """The gRPC stream ended. An exchange still open was cut short (client gone or stream reset)."""
        await self.completion.run()  # an answer whose stages were left for after its reply
        ex = self.ex
        if ex is not None and ex.request_id in answer_log.PARKED:
            return  # Envoy's access log entry completes it
        if ex is not None and not ex.completed:
            if self.reader is not None:
                self.reader.settle()
                if self.reader.usage is not None:
                    ex.usage, ex.response_model = self.reader.usage, self.reader.response_model
            # Envoy resets the client's stream when the provider's connection is cut after the
            # headers (FIN, RST) and when the client goes away: this phase is not told which.
            ex.error = ex.error or (
                "the stream ended before the answer was complete: the provider's or the client's "
                "connection was cut"
                if ex.first_byte is not None
                else "the exchange ended before the answer was complete"
            )
            outcome = "stream_cut" if ex.first_byte is not None else "client_disconnected"
            await self._finish(ex, ex.status or 499, outcome)

    async def _finish(self, ex: Exchange, status: int, outcome: str, answered: bool = False) -> None:
        """The exchange's end as the client saw it, then its stages' ``on_complete`` (``answered``:
        a whole answer, whose stages may wait until its last reply has gone)."""
        if ex.completed:
            return
        ex.completed = True
        ex.status, ex.outcome, ex.ended = status, outcome, time.monotonic()
        if ex.upstream is None:
            ex.upstream = self.facts.direct
        await self.completion.end(ex, self.stages, answered)

    def _exchange(self) -> Exchange:
        if self.ex is None:
            raise GatewayError(500, "the gateway lost track of this request", code="gateway_internal")
        return self.ex
