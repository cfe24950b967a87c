"""The ext_proc service driven in process, message by message, as Envoy would drive it (no Envoy)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from extproc import contracts, gateway, usage_log
from extproc.config.loader import parse_text
from extproc.errors import GatewayError
from extproc.headers import METADATA_NAMESPACE
from extproc.pipeline import router as router_module
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Denied, Needs, Stage
from extproc.server import ExternalProcessor

MODE = processing_mode_pb2.ProcessingMode
OPENAI_KEY = "sk-provider-openai"
ANTHROPIC_KEY = "sk-ant-provider"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def route(name: str, providers: list[dict], **policies: Any) -> dict:
    if len(providers) == 1:
        # The single-provider form takes its key from the route's policies.
        single = dict(providers[0])
        policies = {"backendAuth": single.pop("backendAuth"), **policies}
        backend = {"ai": {"name": name, **single}}
    else:
        backend = {"ai": {"groups": [{"providers": [p]} for p in providers]}}
    return {
        "name": name,
        "matches": [{"path": {"pathPrefix": f"/{name}"}}],
        "backends": [backend],
        "policies": policies,
    }


OPENAI = {"provider": {"openAI": {}}, "hostOverride": "127.0.0.1:9", "backendAuth": {"key": OPENAI_KEY}}
ANTHROPIC = {
    "provider": {"anthropic": {}},
    "hostOverride": "127.0.0.1:9",
    "backendAuth": {"key": ANTHROPIC_KEY},
}


ROUTE_IDS: dict[str, str] = {}


@pytest.fixture(scope="module")
def gw() -> gateway.Gateway:
    routes = [
        route("openai", [OPENAI]),
        route("anthropic", [ANTHROPIC]),
        route("failover", [{"name": "primary", **ANTHROPIC}, {"name": "secondary", **OPENAI}]),
        route(
            "shaped", [OPENAI], ai={"overrides": {"temperature": 0}, "modelAliases": {"fast": "gpt-4o-mini"}}
        ),
    ]
    config = {"binds": [{"port": 3000, "listeners": [{"routes": routes}]}]}
    built = gateway.build(parse_text(yaml.safe_dump(config)).config)
    ROUTE_IDS.update({r.name: r.id for r in built.routes})
    return built


class Context:
    def __init__(self, phase: str) -> None:
        self.phase = phase

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-gw-phase", self.phase),)

    def add_done_callback(self, callback: object) -> None:
        """grpc.aio's: called when the stream ends (the upstream phase closes its attempt span)."""


def headers_msg(
    headers: dict[str, str],
    end: bool = False,
    attrs: dict[str, str] | None = None,
    kind: str = "request_headers",
) -> pb.ProcessingRequest:
    msg = pb.ProcessingRequest()
    part = getattr(msg, kind)
    for key, value in headers.items():
        part.headers.headers.add(key=key, raw_value=value.encode())
    part.end_of_stream = end
    if attrs:
        msg.attributes["envoy.filters.http.ext_proc"].update(attrs)
    return msg


def body_msg(body: bytes, end: bool = True, kind: str = "request_body") -> pb.ProcessingRequest:
    msg = pb.ProcessingRequest()
    getattr(msg, kind).body = body
    getattr(msg, kind).end_of_stream = end
    return msg


class Conversation:
    """One ext_proc stream: send a message, get the reply, as Envoy does (strictly one by one)."""

    def __init__(self, proc: ExternalProcessor, phase: str = "router") -> None:
        self.queue: asyncio.Queue[pb.ProcessingRequest | None] = asyncio.Queue()
        self.replies = proc.Process(self._messages(), Context(phase))  # type: ignore[arg-type]

    async def _messages(self) -> Any:
        while (msg := await self.queue.get()) is not None:
            yield msg

    async def send(self, msg: pb.ProcessingRequest) -> pb.ProcessingResponse:
        await self.queue.put(msg)
        return await self.replies.__anext__()

    async def end(self) -> None:
        await self.queue.put(None)
        with pytest.raises(StopAsyncIteration):
            await self.replies.__anext__()


def set_headers(common: pb.CommonResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


def provider_headers(headers: dict[str, str]) -> pb.ProcessingRequest:
    """The provider's response headers, as Envoy sends them after an upstream answered."""
    return headers_msg(headers, kind="response_headers", attrs={"response.code_details": "via_upstream"})


def request_headers(path: str, route_name: str, **extra: str) -> pb.ProcessingRequest:
    """Envoy names the route it matched (``xds.route_name``): the gateway's route id."""
    route_name = ROUTE_IDS.get(route_name, route_name)
    return headers_msg(
        {":method": "POST", ":path": path, "content-type": "application/json", **extra},
        attrs={"xds.route_name": route_name},
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def chat_body_reply(proc: ExternalProcessor, route: str) -> pb.ProcessingResponse:
    """The router phase's answer to the bench chat body on ``/{route}``, the stream then ended."""

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(proc)
        await conv.send(request_headers(f"/{route}/v1/chat/completions", route))
        r = await conv.send(body_msg(json.dumps(CHAT).encode()))
        await conv.end()
        return r

    return run(go())


# --- single-provider route: the router phase does the egress work ---------------------------------


def test_openai_route_message_by_message(gw: gateway.Gateway) -> None:
    async def go() -> None:
        conv = Conversation(ExternalProcessor(gw))
        r = await conv.send(
            request_headers(
                "/openai/v1/chat/completions",
                "openai",
                authorization="Bearer client",
                cookie="c=1",
                **{"x-custom": "1"},
            )
        )
        assert r.HasField("request_headers")
        # The usage record needs the answer: Envoy is asked for the response headers.
        assert r.mode_override.response_header_mode == MODE.SEND
        assert r.mode_override.request_body_mode == MODE.BUFFERED

        r = await conv.send(body_msg(json.dumps(CHAT).encode()))
        common = r.request_body.response
        sent = set_headers(common)
        assert sent[":path"] == "/v1/chat/completions"
        assert sent["authorization"] == f"Bearer {OPENAI_KEY}"
        assert {"cookie", "x-custom"} <= set(common.header_mutation.remove_headers)
        assert "authorization" not in common.header_mutation.remove_headers  # overwritten instead
        assert not common.HasField("body_mutation")  # the client's body goes as it is
        meta = r.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
        assert meta["api"].string_value == "completions"
        decision = contracts.decode_decision(meta[contracts.DECISION_KEY].string_value)
        assert decision.route_id == ROUTE_IDS["openai"] and decision.requested_model == "gpt-4o"
        assert decision.request_id == meta["request_id"].string_value

        r = await conv.send(provider_headers({":status": "200", "content-type": "application/json"}))
        assert r.mode_override.response_body_mode == MODE.BUFFERED  # observed for usage
        assert set_headers(r.response_headers.response)["x-gateway-request-id"] == decision.request_id

        answer = {
            "id": "c1",
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        r = await conv.send(body_msg(json.dumps(answer).encode(), kind="response_body"))
        assert not r.response_body.response.HasField("body_mutation")
        await conv.end()

    run(go())


def test_usage_record_fields(gw: gateway.Gateway) -> None:
    out = io.BytesIO()
    usage_log.start(out)

    async def go() -> None:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(
            # What Envoy hands on: its own x-request-id, the client's copied (render/filters.py).
            request_headers(
                "/openai/v1/chat/completions",
                "openai",
                **{"x-request-id": "envoy-made", "x-gw-client-request-id": "client-1"},
            )
        )
        await conv.send(body_msg(json.dumps(CHAT).encode()))
        await conv.send(provider_headers({":status": "200"}))
        answer = {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        await conv.send(body_msg(json.dumps(answer).encode(), kind="response_body"))
        await conv.end()

    run(go())
    usage_log.stop()
    (record,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert record["client_request_id"] == "client-1" and record["request_id"] != "client-1"
    assert (
        record["route"] == "openai" and record["provider"] == "openai" and record["http_status_code"] == 200
    )
    assert record["request_model"] == "gpt-4o" and record["response_model"] == "gpt-4o-2024-08-06"
    assert record["input_tokens"] == 7 and record["output_tokens"] == 3 and record["total_tokens"] == 10
    assert record["outcome"] == "ok" and record["attempt_count"] == 1


def test_translated_stream_switches_to_streamed_and_translates_chunks(gw: gateway.Gateway) -> None:
    async def go() -> None:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers("/anthropic/v1/chat/completions", "anthropic"))
        r = await conv.send(body_msg(json.dumps({**CHAT, "model": "claude-x", "stream": True}).encode()))
        sent = set_headers(r.request_body.response)
        assert sent[":path"] == "/v1/messages" and sent["x-api-key"] == ANTHROPIC_KEY
        assert json.loads(r.request_body.response.body_mutation.body)["stream"] is True
        r = await conv.send(provider_headers({":status": "200", "content-type": "text/event-stream"}))
        # Full duplex: the client gets only what the sidecar sends back, so it can end the stream.
        assert r.mode_override.response_body_mode == MODE.FULL_DUPLEX_STREAMED
        assert r.mode_override.response_trailer_mode == MODE.SEND  # Envoy requires it in that mode
        assert set_headers(r.response_headers.response)["content-type"] == "text/event-stream"
        events = (
            b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"claude-x","usage":{"input_tokens":5,"output_tokens":0}}}\n\n'
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        )
        r = await conv.send(body_msg(events[:50], end=False, kind="response_body"))
        first = r.response_body.response.body_mutation.streamed_response
        assert not first.end_of_stream
        r = await conv.send(body_msg(events[50:], end=False, kind="response_body"))
        out = first.body + r.response_body.response.body_mutation.streamed_response.body
        assert b'"content":"Hi"' in out and b"chat.completion.chunk" in out
        end = b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
        r = await conv.send(body_msg(end, end=True, kind="response_body"))
        last = r.response_body.response.body_mutation.streamed_response
        assert last.body.endswith(b"data: [DONE]\n\n") and last.end_of_stream
        await conv.end()

    run(go())


# --- immediate responses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/openai/v1/chat/completions", "openai"), ("/openai/v1/messages", "anthropic")],
)
def test_bad_body_is_an_immediate_400_in_the_clients_shape(
    gw: gateway.Gateway, path: str, shape: str
) -> None:
    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers(path, "openai"))
        r = await conv.send(body_msg(b"{not json"))
        await conv.end()
        return r

    r = run(go())
    imm = r.immediate_response
    assert imm.status.code == 400
    sent = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    assert len(sent["x-gateway-request-id"]) == 32  # the client can quote it to find the usage record
    meta = r.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
    assert meta["request_id"].string_value == sent["x-gateway-request-id"]  # for Envoy's access log
    body = json.loads(imm.body)
    if shape == "openai":
        assert body["error"]["code"] == "invalid_json" and body["error"]["type"] == "invalid_request_error"
    else:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_unknown_route_and_unknown_path_are_404s(gw: gateway.Gateway) -> None:
    async def go(path: str, name: str) -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw))
        r = await conv.send(request_headers(path, name))
        await conv.end()
        return r

    assert run(go("/nowhere/v1/chat/completions", "nope")).immediate_response.status.code == 404
    r = run(go("/openai/v1/files", "openai"))
    assert r.immediate_response.status.code == 404
    assert json.loads(r.immediate_response.body)["error"]["code"] == "unknown_path"


def test_provider_error_on_a_translated_route_mid_exchange(gw: gateway.Gateway) -> None:
    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers("/anthropic/v1/chat/completions", "anthropic"))
        await conv.send(body_msg(json.dumps({**CHAT, "model": "claude-x"}).encode()))
        r = await conv.send(provider_headers({":status": "529"}))
        assert r.mode_override.response_body_mode == MODE.BUFFERED
        err = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
        r = await conv.send(body_msg(err, kind="response_body"))
        await conv.end()
        return r

    body = json.loads(run(go()).response_body.response.body_mutation.body)
    assert body["error"]["message"] == "Overloaded" and body["error"]["code"] == "overloaded_error"


def test_envoy_local_reply_is_left_alone_and_recorded(gw: gateway.Gateway) -> None:
    out = io.BytesIO()
    usage_log.start(out)

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers("/anthropic/v1/chat/completions", "anthropic"))
        await conv.send(body_msg(json.dumps({**CHAT, "model": "claude-x"}).encode()))
        r = await conv.send(
            headers_msg(
                {":status": "503"},
                kind="response_headers",
                attrs={"response.code_details": "upstream_reset_before_response_started{connection_failure}"},
            )
        )
        await conv.end()
        return r

    r = run(go())
    usage_log.stop()
    assert r.mode_override.response_body_mode == MODE.NONE
    (record,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert record["outcome"] == "envoy_error" and record["http_status_code"] == 503
    assert "connection_failure" in record["error"]


# --- stages: the interface, and the modes they ask for ----------------------------------------------


class DenyAll(Stage):
    name = "deny_all"
    needs = Needs.REQUEST_BODY

    async def on_request(self, ex: Exchange) -> None:
        raise Denied(429, "too many requests for this key", code="rate_limited", headers={"retry-after": "7"})


class Complete(Stage):
    name = "complete"
    needs = Needs.NONE

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def on_complete(self, ex: Exchange) -> None:
        self.seen.append((ex.outcome, ex.status))


def test_a_denying_stage_answers_at_once_and_on_complete_still_runs(gw: gateway.Gateway) -> None:
    done = Complete()
    proc = ExternalProcessor(gw, {ROUTE_IDS["openai"]: [DenyAll(), done]})
    imm = chat_body_reply(proc, "openai").immediate_response
    assert imm.status.code == 429
    assert {h.header.key: h.header.raw_value for h in imm.headers.set_headers}["retry-after"] == b"7"
    assert json.loads(imm.body)["error"]["code"] == "rate_limited"
    assert done.seen == [("gateway_error", 429)]


class SlowComplete(Stage):
    """An on_complete that takes as long as the test says (a slow settle, a busy log)."""

    name = "slow_complete"
    needs = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY

    def __init__(self) -> None:
        self.go_on = asyncio.Event()
        self.seen: list[tuple[str, int]] = []

    async def on_complete(self, ex: Exchange) -> None:
        await self.go_on.wait()
        self.seen.append((ex.outcome, ex.status))


async def _answered(conv: Conversation) -> pb.ProcessingResponse:
    """An OpenAI exchange up to the answer's last reply."""
    await conv.send(request_headers("/openai/v1/chat/completions", "openai"))
    await conv.send(body_msg(json.dumps(CHAT).encode()))
    await conv.send(provider_headers({":status": "200"}))
    answer = {"model": "gpt-4o", "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    return await asyncio.wait_for(conv.send(body_msg(json.dumps(answer).encode(), kind="response_body")), 2)


def test_the_answers_last_reply_does_not_wait_for_on_complete(gw: gateway.Gateway) -> None:
    slow = SlowComplete()
    proc = ExternalProcessor(gw, {ROUTE_IDS["openai"]: [slow]})

    async def go() -> None:
        conv = Conversation(proc)
        r = await _answered(conv)  # before: this waited for on_complete, and timed out
        assert r.HasField("response_body") and slow.seen == []
        slow.go_on.set()
        await conv.end()
        assert slow.seen == [("ok", 200)]

    run(go())


def test_on_complete_still_runs_once_with_the_answers_outcome_when_the_stream_is_closed_at_once(
    gw: gateway.Gateway,
) -> None:
    slow = SlowComplete()
    slow.go_on.set()
    proc = ExternalProcessor(gw, {ROUTE_IDS["openai"]: [slow]})

    async def go() -> None:
        conv = Conversation(proc)
        # The router phase's own generator, which grpc's Process delegates to.
        conv.replies = proc._router(conv._messages())
        await _answered(conv)
        await conv.replies.aclose()  # the stream ends at the reply it took (a reset stream)
        assert slow.seen == [("ok", 200)]  # not "stream_cut": the client had the whole answer

    run(go())


class AskThenDecide(Stage):
    """Sends its question in on_request and takes the answer in decide (a limit store's way)."""

    name = "ask"
    needs = Needs.REQUEST_BODY

    def __init__(self, order: list[str], refuse: bool = False) -> None:
        self.order, self.refuse = order, refuse

    async def on_request(self, ex: Exchange) -> None:
        self.order.append("ask")

    async def decide(self, ex: Exchange) -> None:
        self.order.append("decide")
        if self.refuse:
            raise Denied(429, "no room left", code="rate_limited")


class Later(Stage):
    name = "later"

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def on_request(self, ex: Exchange) -> None:
        self.order.append("later")


@pytest.mark.parametrize("refuse", [False, True])
def test_decide_comes_after_every_on_request_before_the_egress_work_and_may_refuse(
    gw: gateway.Gateway, monkeypatch: pytest.MonkeyPatch, refuse: bool
) -> None:
    order: list[str] = []
    real_build = router_module.outbound.build

    async def build(*args: Any, **kw: Any) -> Any:
        order.append("egress")
        return await real_build(*args, **kw)

    monkeypatch.setattr(router_module.outbound, "build", build)
    done = Complete()
    proc = ExternalProcessor(gw, {ROUTE_IDS["openai"]: [AskThenDecide(order, refuse), Later(order), done]})
    r = chat_body_reply(proc, "openai")
    # A refused request is never signed or sent: no egress work for it.
    assert order == ["ask", "later", "decide"] + ([] if refuse else ["egress"])
    if refuse:  # the client gets the refusal in its format
        assert r.immediate_response.status.code == 429
        assert json.loads(r.immediate_response.body)["error"]["code"] == "rate_limited"
        assert done.seen == [("gateway_error", 429)]
    else:
        assert not r.HasField("immediate_response")
        mutation = {h.header.key for h in r.request_body.response.header_mutation.set_headers}
        assert "authorization" in mutation  # the provider's key, from the egress work


def test_a_route_without_response_stages_skips_the_response(gw: gateway.Gateway) -> None:
    """Native OpenAI route, no stage that reads the answer: Envoy is not asked for it."""
    done = Complete()
    proc = ExternalProcessor(gw, {ROUTE_IDS["openai"]: [done]})

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(proc)
        r = await conv.send(request_headers("/openai/v1/chat/completions", "openai"))
        await conv.send(body_msg(json.dumps(CHAT).encode()))
        await conv.end()
        return r

    r = run(go())
    assert not r.HasField("mode_override")  # the filter's default: response headers skipped
    assert done.seen == [("client_disconnected", 499)]  # the stream ended without an answer


def test_translating_routes_ask_for_the_response_even_without_stages(gw: gateway.Gateway) -> None:
    proc = ExternalProcessor(gw, {ROUTE_IDS["anthropic"]: []})

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(proc)
        r = await conv.send(request_headers("/anthropic/v1/chat/completions", "anthropic"))
        await conv.end()
        return r

    assert run(go()).mode_override.response_header_mode == MODE.SEND


def test_shaping_stage_rewrites_the_body_once(gw: gateway.Gateway) -> None:
    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers("/shaped/v1/chat/completions", "shaped"))
        r = await conv.send(body_msg(json.dumps({**CHAT, "model": "fast", "temperature": 1}).encode()))
        await conv.end()
        return r

    common = run(go()).request_body.response
    sent = json.loads(common.body_mutation.body)
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0
    assert set_headers(common)["content-length"] == str(len(common.body_mutation.body))


# --- several providers: the upstream phase, once per attempt ----------------------------------------


def host_metadata(upstream_id: str) -> str:
    meta = base_pb2.Metadata()
    meta.filter_metadata[METADATA_NAMESPACE].update({"upstream": upstream_id})
    return str(meta)


def test_failover_route_router_leaves_egress_to_the_upstream_phase(gw: gateway.Gateway) -> None:
    r = chat_body_reply(ExternalProcessor(gw), "failover")
    assert ":path" not in set_headers(r.request_body.response)
    assert contracts.DECISION_KEY in r.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields


def test_upstream_phase_removes_what_an_earlier_attempt_set(gw: gateway.Gateway) -> None:
    secondary = next(u for u in gw.upstreams_by_id.values() if u.name == "secondary")
    decision = contracts.RouteDecision(
        request_id="r1",
        client_api=contracts.client_api("completions"),
        client_path="/failover/v1/chat/completions",
        route_id=ROUTE_IDS["failover"],
    )
    meta = struct_pb2.Struct()
    meta.update({contracts.DECISION_KEY: contracts.encode_decision(decision)})

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw), phase="upstream")
        msg = headers_msg(
            {
                ":method": "POST",
                ":path": "/v1/messages",
                "x-api-key": ANTHROPIC_KEY,
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
            },
            attrs={"xds.upstream_host_metadata": host_metadata(secondary.id)},
        )
        msg.metadata_context.filter_metadata[METADATA_NAMESPACE].CopyFrom(meta)
        r = await conv.send(msg)
        assert not r.HasField("mode_override")  # the answer is read by the router phase
        r = await conv.send(body_msg(json.dumps(CHAT).encode()))
        await conv.end()
        return r

    common = run(go()).request_body.response
    assert set_headers(common)[":path"] == "/v1/chat/completions"
    assert set_headers(common)["authorization"] == f"Bearer {OPENAI_KEY}"
    assert {"x-api-key", "anthropic-version"} <= set(common.header_mutation.remove_headers)


def test_upstream_phase_without_a_decision_fails_closed(gw: gateway.Gateway) -> None:
    secondary = next(u for u in gw.upstreams_by_id.values() if u.name == "secondary")

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw), phase="upstream")
        r = await conv.send(
            headers_msg(
                {":method": "POST", ":path": "/x"},
                attrs={"xds.upstream_host_metadata": host_metadata(secondary.id)},
            )
        )
        await conv.end()
        return r

    imm = run(go()).immediate_response
    assert imm.status.code == 500
    assert json.loads(imm.body)["error"]["code"] == "gateway_internal"


def test_gateway_error_type_carries_headers() -> None:
    err = GatewayError(429, "slow down", headers={"retry-after": "1"})
    assert err.headers == {"retry-after": "1"}


def test_unreadable_answer_is_an_immediate_502_at_response_headers(gw: gateway.Gateway) -> None:
    """Mid-exchange (the request already went): the client still gets its own error shape."""

    async def go() -> pb.ProcessingResponse:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers("/anthropic/v1/chat/completions", "anthropic"))
        await conv.send(body_msg(json.dumps({**CHAT, "model": "claude-x"}).encode()))
        r = await conv.send(provider_headers({":status": "200", "content-encoding": "br"}))
        await conv.end()
        return r

    imm = run(go()).immediate_response
    assert imm.status.code == 502
    assert json.loads(imm.body)["error"]["code"] == "bad_upstream_response"


def test_corrupt_gzip_mid_stream_ends_the_stream_with_an_error_event(gw: gateway.Gateway) -> None:
    async def go() -> bytes:
        conv = Conversation(ExternalProcessor(gw))
        await conv.send(request_headers("/anthropic/v1/chat/completions", "anthropic"))
        await conv.send(body_msg(json.dumps({**CHAT, "model": "claude-x", "stream": True}).encode()))
        await conv.send(provider_headers({":status": "200", "content-encoding": "gzip"}))
        r = await conv.send(body_msg(b"definitely not gzip", end=False, kind="response_body"))
        await conv.end()
        return r.response_body.response.body_mutation.streamed_response.body

    out = run(go())
    assert b'"error"' in out and out.endswith(b"data: [DONE]\n\n")


class Estimate(Stage):
    name = "estimate"
    needs = Needs.REQUEST_BODY

    def __init__(self) -> None:
        self.seen: list[int | None] = []

    async def on_request(self, ex: Exchange) -> None:
        self.seen.append(ex.estimated_tokens())


def test_a_stage_reads_the_token_estimate_before_the_call(gw: gateway.Gateway) -> None:
    estimate = Estimate()
    proc = ExternalProcessor(gw, {ROUTE_IDS["openai"]: [estimate]})
    long_prompt = {**CHAT, "max_tokens": 100, "messages": [{"role": "user", "content": "word " * 200}]}

    async def go(body: dict) -> None:
        conv = Conversation(proc)
        await conv.send(request_headers("/openai/v1/chat/completions", "openai"))
        await conv.send(body_msg(json.dumps(body).encode()))
        await conv.end()

    run(go({**CHAT, "max_tokens": 100}))
    run(go(long_prompt))
    short, long = estimate.seen
    assert short is not None and long is not None
    assert 100 < short < long  # prompt plus the answer's allowance; a longer prompt costs more
    assert long - short >= 150  # about one token per repeated word
