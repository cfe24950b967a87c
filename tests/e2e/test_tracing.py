"""Traces through the real Envoy, into a real OTLP gRPC receiver started here (tests/otlp_receiver.py).

Envoy's spans and the extproc sidecar's arrive in one trace: the client's traceparent is the
parent of Envoy's request span, Envoy's span of the router-phase ext_proc stream is the parent of
the gateway's ``chat {model}`` span, each provider attempt is a child of that, and the provider
receives its attempt's context in ``traceparent``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    CLIENT_KEY,
    OPENAI_KEY,
    ROOT,
    Gateway,
    Mock,
    failover_route,
    free_port,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)
from tests.otlp_receiver import Receiver, Span

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
ENVOY = "gateway-envoy"
EXTPROC = "gateway-extproc"
CHAT = {
    "model": "gpt-4o",
    "max_tokens": 50,
    "temperature": 0.2,
    "top_p": 0.9,
    "messages": [{"role": "user", "content": "say something secret-free"}],
}
SECRETS = (CLIENT_KEY, OPENAI_KEY, ANTHROPIC_KEY)


def fast_envoy_export(bootstrap: dict) -> None:
    """Envoy's tracer flushes every 5 s by default: every 100 ms here, so tests wait less."""
    bootstrap["layered_runtime"] = {
        "layers": [
            {
                "name": "static",
                "static_layer": {
                    "tracing.opentelemetry.flush_interval_ms": 100,
                    "tracing.opentelemetry.min_flush_spans": 1,
                },
            },
            {"name": "admin", "admin_layer": {}},
        ]
    }


def traced_config(routes: list[dict], receiver: Receiver, **tracing: Any) -> dict:
    config = listener_config(routes)
    config["config"]["tracing"] = {"otlpEndpoint": receiver.endpoint, **tracing}
    config["config"]["cost"] = {"pricesFile": str(ROOT / "policies" / "prices.json")}
    return config


def traceparent(span: str = CLIENT_SPAN, trace: str = CLIENT_TRACE, flags: str = "01") -> str:
    return f"00-{trace}-{span}-{flags}"


def by_name(spans: list[Span], prefix: str, service: str = EXTPROC) -> list[Span]:
    return [s for s in spans if s.name.startswith(prefix) and s.service == service]


def span_by_id(spans: list[Span], span_id: str) -> Span:
    (found,) = [s for s in spans if s.span_id == span_id]
    return found


def wait_trace(receiver: Receiver, trace_id: str, attempts: int, timeout: float = 15) -> list[Span]:
    """The trace once Envoy's request span, the chat span and ``attempts`` attempt spans are in."""

    def ready(spans: list[Span]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return (
            len(by_name(mine, "chat")) == 1
            and len(by_name(mine, "attempt")) == attempts
            and any(s.service == ENVOY and s.parent_id in ("", CLIENT_SPAN) for s in mine)
        )

    return [s for s in receiver.wait(ready, timeout) if s.trace_id == trace_id]


def received_traceparents(mock: Mock) -> list[str]:
    return [r["headers"].get("traceparent", "") for r in mock.requests()]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def silent() -> Iterator[int]:
    """A port that takes connections and never answers (the kernel's backlog accepts them)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def silent_route(host: str, silent_port: int) -> dict:
    route = failover_route("silent", "/silent", f"127.0.0.1:{silent_port}", host)
    route["policies"]["timeout"] = {"backendRequestTimeout": "500ms"}
    return route


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, silent: int
) -> Iterator[tuple[Gateway, Mock, Mock]]:
    mock, down = start_mock(), start_mock("--force-status", "503")
    host = f"127.0.0.1:{mock.port}"
    routes = [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, ANTHROPIC_KEY),
        failover_route("fo", "/fo", f"127.0.0.1:{down.port}", host),
        silent_route(host, silent),
    ]
    config = traced_config(routes, receiver, fields={"add": {"team": 'request.headers["x-team"]'}})
    tmp = tmp_path_factory.mktemp("traced")
    with running([mock, down], lambda: launch(tmp, config, mock, fast_envoy_export)) as gw:
        yield gw, mock, down


def post(gw: Gateway, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=20)


def test_one_trace_envoy_chat_and_attempt_spans(traced: tuple[Gateway, Mock, Mock], receiver: Receiver) -> None:
    gw, mock, _ = traced
    mock.clear()
    resp = post(
        gw, "/openai/v1/chat/completions", CHAT,
        traceparent=traceparent(), authorization=f"Bearer {CLIENT_KEY}", **{"x-team": "red"},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    spans = wait_trace(receiver, CLIENT_TRACE, attempts=1)
    (chat,) = by_name(spans, "chat")
    (attempt,) = by_name(spans, "attempt")
    # Envoy continues the client's trace: its request span is the client span's child ...
    (envoy_request,) = [s for s in spans if s.service == ENVOY and s.parent_id == CLIENT_SPAN]
    assert envoy_request.kind == 2  # SERVER
    # ... the chat span is a child of Envoy's span of the router-phase ext_proc stream ...
    grpc_span = span_by_id(spans, chat.parent_id)
    assert grpc_span.service == ENVOY and "ExternalProcessor" in grpc_span.name
    assert grpc_span.parent_id == envoy_request.span_id
    # ... the attempt is the chat span's child, and the provider got the attempt's context.
    assert attempt.parent_id == chat.span_id
    assert received_traceparents(mock) == [traceparent(attempt.span_id)]
    assert chat.name == "chat gpt-4o" and attempt.name == "attempt 1 openai"
    usage = resp.json()["usage"]
    a = chat.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.response.model"] == resp.json()["model"]
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.top_p"] == 0.9 and "gen_ai.request.stream" not in a  # only when true
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["gen_ai.response.finish_reasons"] == [resp.json()["choices"][0]["finish_reason"]]
    assert a["gen_ai.response.id"] == resp.json()["id"]
    assert a["gateway.cost.usd"] > 0 and "gateway.cost.status" not in a  # said only when not priced
    assert a["gateway.request_id"] == resp.headers["x-gateway-request-id"]
    assert a["http.response.status_code"] == 200 and a["team"] == "red"
    assert chat.kind == 3 and chat.status_code == 0  # CLIENT, no error
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert envoy_request.start_ns <= chat.start_ns <= attempt.start_ns <= attempt.end_ns <= chat.end_ns
    # No prompt unless a field asks for it; no credential anywhere.
    dumped = json.dumps([s.attributes for s in spans])
    assert "secret-free" not in dumped
    assert not any(secret in dumped for secret in SECRETS)


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
def test_tracing_leaves_a_native_answer_as_the_provider_sent_it(
    traced: tuple[Gateway, Mock, Mock], receiver: Receiver, gzipped: bool
) -> None:
    """The chat span's finish reasons are read from the answer; reading is not rewriting: the
    client gets the provider's bytes and framing (before, tracing on dropped content-length and
    sent a gzip answer decoded)."""
    gw, _, _ = traced
    trace = ("cd" if gzipped else "ab") * 16
    extra = {"x-mock-gzip": "1"} if gzipped else {}
    resp = post(
        gw, "/openai/v1/chat/completions", CHAT,
        traceparent=traceparent(trace=trace), authorization=f"Bearer {CLIENT_KEY}", **extra,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert "transfer-encoding" not in resp.headers
    assert int(resp.headers["content-length"]) == resp.num_bytes_downloaded
    assert resp.headers.get("content-encoding") == ("gzip" if gzipped else None)
    (chat,) = by_name(wait_trace(receiver, trace, attempts=1), "chat")
    assert chat.attributes["gen_ai.response.finish_reasons"] == [resp.json()["choices"][0]["finish_reason"]]
    assert chat.attributes["gen_ai.response.id"] == resp.json()["id"]


def test_failover_has_one_attempt_span_per_attempt(traced: tuple[Gateway, Mock, Mock], receiver: Receiver) -> None:
    gw, mock, down = traced
    mock.clear()
    down.clear()
    trace = "1" * 32
    resp = post(gw, "/fo/v1/chat/completions", {"messages": CHAT["messages"]}, traceparent=traceparent(trace=trace))
    assert resp.status_code == 200, resp.text
    spans = wait_trace(receiver, trace, attempts=2)
    (chat,) = by_name(spans, "chat")
    first, second = sorted(by_name(spans, "attempt"), key=lambda s: s.attributes["gateway.attempt.number"])
    assert first.name == "attempt 1 primary" and second.name == "attempt 2 secondary"
    assert first.parent_id == second.parent_id == chat.span_id
    assert first.attributes["http.response.status_code"] == 503 and first.attributes["error.type"] == "503"
    assert first.status_code == 2 and second.status_code == 0
    assert first.attributes["gen_ai.provider.name"] == "anthropic"
    assert second.attributes["gen_ai.provider.name"] == "openai"
    assert first.end_ns <= second.start_ns
    # Each provider got its own attempt's context, never the client's or Envoy's.
    assert received_traceparents(down) == [traceparent(first.span_id, trace)]
    assert received_traceparents(mock) == [traceparent(second.span_id, trace)]
    assert chat.attributes["gateway.attempt.count"] == 2
    assert chat.attributes["gateway.provider"] == "secondary"


def test_an_attempt_without_response_has_its_span(traced: tuple[Gateway, Mock, Mock], receiver: Receiver) -> None:
    gw, _, _ = traced
    trace = "3" * 32
    resp = post(gw, "/silent/v1/chat/completions", {"messages": CHAT["messages"]}, traceparent=traceparent(trace=trace))
    assert resp.status_code == 200, resp.text
    spans = wait_trace(receiver, trace, attempts=2)
    first, second = sorted(by_name(spans, "attempt"), key=lambda s: s.attributes["gateway.attempt.number"])
    assert first.attributes["error.type"] == "no_response" and "http.response.status_code" not in first.attributes
    assert first.status_code == 2 and second.attributes["http.response.status_code"] == 200
    assert first.duration_s >= 0.25  # until Envoy's per-try timeout (0.5 s) reset it


def test_streaming_spans_end_with_the_stream(traced: tuple[Gateway, Mock, Mock], receiver: Receiver) -> None:
    gw, _, _ = traced
    trace = "2" * 32
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True, "messages": CHAT["messages"]}
    headers = {"traceparent": traceparent(trace=trace), "x-mock-chunk-bytes": "20", "x-mock-chunk-delay-ms": "40"}
    with httpx.stream("POST", gw.url + "/anthropic/v1/messages", json=body, headers=headers, timeout=20) as resp:
        assert resp.status_code == 200
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    spans = wait_trace(receiver, trace, attempts=1)
    (chat,) = by_name(spans, "chat")
    (attempt,) = by_name(spans, "attempt")
    delta = next(e for e in events if e["type"] == "message_delta")
    assert chat.attributes["gen_ai.usage.output_tokens"] == delta["usage"]["output_tokens"]
    assert chat.attributes["gen_ai.response.finish_reasons"] == [delta["delta"]["stop_reason"]]
    assert chat.attributes["gen_ai.request.stream"] is True
    ttfc = chat.attributes["gen_ai.response.time_to_first_chunk"]
    # The stream took several chunk delays: both spans last until its end, well past the first chunk.
    assert chat.duration_s > ttfc + 0.1 and attempt.duration_s > 0.1
    assert attempt.end_ns == chat.end_ns


def test_sampling_false_exports_nothing(tmp_path: Path) -> None:
    mock = start_mock()
    with Receiver() as receiver:
        routes = [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)]
        config = traced_config(routes, receiver, randomSampling=False)
        with running([mock], lambda: launch(tmp_path, config, mock, fast_envoy_export)) as gw:
            for headers in ({}, {"traceparent": traceparent()}):
                assert post(gw, "/openai/v1/chat/completions", CHAT, **headers).status_code == 200
            sent = received_traceparents(mock)
            spans = receiver.wait(lambda s: bool(s), timeout=3)
    assert spans == []
    # The trace still goes on, unsampled: the provider gets the client's trace id, flags 00.
    assert sent[1].startswith(f"00-{CLIENT_TRACE}-") and sent[1].endswith("-00")


def test_seed_metrics_testing_tracing_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rate-limiting-metrics-failover-demo.md's metrics-testing.yaml, its tracing block as written
    but for the collector's address, and its "Test Tracing" request: the listed fields are on the span."""
    seed = yaml.safe_load((ROOT / "tests" / "configs" / "metrics-testing.yaml").read_text())
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    mock = start_mock()
    with Receiver() as receiver:
        seed["config"]["tracing"]["otlpEndpoint"] = receiver.endpoint
        seed["config"].update({"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()})
        seed["binds"][0]["port"] = free_port()
        seed["binds"][0]["listeners"][0]["routes"][0]["backends"][0]["ai"]["hostOverride"] = f"127.0.0.1:{mock.port}"
        with running([mock], lambda: launch(tmp_path, seed, mock, fast_envoy_export)) as gw:
            messages = [
                {"role": "system", "content": "You are a skilled cloud-native network engineer."},
                {"role": "user", "content": "Write me a paragraph about Istio Ambient Mesh"},
            ]
            resp = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json={"model": "claude-sonnet-4-5", "messages": messages},
                headers={"anthropic-version": "2023-06-01", "x-api-key": CLIENT_KEY},
                timeout=20,
            )
            assert resp.status_code == 200, resp.text
            spans = receiver.wait(lambda s: bool(by_name(s, "chat")) and any(x.service == ENVOY for x in s))
    (chat,) = by_name(spans, "chat")
    a = chat.attributes
    assert chat.name == "chat claude-3-5-haiku-latest"
    # No JWT on the seed's route: jwt.sub fails, null, and OTel attributes have no null: absent.
    assert "authenticated" not in a and a["gen_ai.system"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-3-5-haiku-latest"
    assert a["gen_ai.response.model"] == resp.json()["model"]
    assert a["gen_ai.usage.input_tokens"] == resp.json()["usage"]["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == resp.json()["usage"]["completion_tokens"]
    assert a["gen_ai.operation.name"] == "chat"
    assert {s.trace_id for s in spans} == {chat.trace_id}  # Envoy's spans and the gateway's: one trace
    assert not any(k in json.dumps([s.attributes for s in spans]) for k in (CLIENT_KEY, ANTHROPIC_KEY))


def test_prompt_is_a_span_attribute_only_when_a_field_asks(tmp_path: Path) -> None:
    mock = start_mock()
    with Receiver() as receiver:
        routes = [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)]
        fields = {"gen_ai.prompt": "llm.prompt", "span.name": '"llm " + llm.requestModel'}
        config = traced_config(routes, receiver, fields={"add": fields})
        with running([mock], lambda: launch(tmp_path, config, mock, fast_envoy_export)) as gw:
            leaky = {**CHAT, "messages": [{"role": "user", "content": f"my key is {CLIENT_KEY}"}]}
            assert post(gw, "/openai/v1/chat/completions", leaky).status_code == 200
            spans = receiver.wait(lambda s: bool(by_name(s, "llm")))
    (chat,) = by_name(spans, "llm")
    assert chat.name == "llm gpt-4o"
    assert json.loads(chat.attributes["gen_ai.prompt"]) == [{"role": "user", "content": "my key is [REDACTED]"}]
