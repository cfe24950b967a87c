"""Streams through the real Envoy: long healthy streams, stalled and cut provider connections, endings.

A relay (tests/relay.py) sits between Envoy and the mock provider and cuts the provider's
connection after the response headers and some body bytes: FIN, RST, or silence. Every provider
and both client APIs (OpenAI chat completions, Anthropic Messages) are covered.

- A stream that keeps delivering outlives ``requestTimeout``; a non-streamed answer does not.
- Silence between chunks past ``streamIdleTimeout``, or a stream past ``streamMaxDuration``: the
  client gets an error event in its stream format and a cleanly ended body.
- A provider that hangs up (FIN) or resets (RST) after the headers: the stream relay (the
  extproc sidecar's, ``limits.streamRelay``) ends Envoy's body cleanly, and the client gets the
  events so far (whole ones only), then the error event in its format and a clean end; the
  official SDKs raise their API error there; the usage record says ``stream_cut``. Without the
  relay Envoy can only reset the client's stream (the README says why).
- OpenAI-format streams end with ``data: [DONE]``, after an in-band error too, passthrough and
  translated alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    AZURE_KEY,
    BEDROCK_KEY,
    GEMINI_KEY,
    OPENAI_KEY,
    VERTEX_TOKEN,
    Gateway,
    Mock,
    failover_route,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)
from tests.relay import Fault, Relay

REQUEST_TIMEOUT = 1.0
IDLE = 1.0
MAX = 2.5
# About 30 pieces 80 ms apart: a stream of about 2.5 s, well past REQUEST_TIMEOUT, never idle for long.
PACED = {"x-mock-chunk-bytes": "40", "x-mock-chunk-delay-ms": "80"}
PROMPT = "a long long answer please, with many words in it"


@dataclass(frozen=True)
class Provider:
    name: str
    spec: dict[str, Any]
    key: str
    chat_model: str  # what an OpenAI chat client asks for
    messages_model: str  # what an Anthropic Messages client asks for


PROVIDERS = [
    Provider("openai", {"openAI": {}}, OPENAI_KEY, "gpt-4o", "gpt-4o"),
    Provider(
        "azure",
        {"azure": {"resourceName": "e2e", "deploymentName": "dep-e2e", "apiVersion": "2024-10-21"}},
        AZURE_KEY,
        "gpt-4o",
        "gpt-4o",
    ),
    Provider("anthropic", {"anthropic": {}}, ANTHROPIC_KEY, "claude-sonnet-4-6", "claude-sonnet-4-6"),
    Provider("gemini", {"gemini": {}}, GEMINI_KEY, "gemini-2.5-flash", "gemini-2.5-flash"),
    Provider(
        "vertex",
        {"vertex": {"projectId": "e2e-project", "region": "us-central1"}},
        VERTEX_TOKEN,
        "gemini-2.5-pro",
        "claude-sonnet-4@20250514",
    ),
    Provider(
        "bedrock",
        {"bedrock": {"region": "us-west-2"}},
        BEDROCK_KEY,
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    ),
]
BY_NAME = {p.name: p for p in PROVIDERS}
APIS = ("chat", "messages")
CASES = [pytest.param(p.name, api, id=f"{p.name}-{api}") for p in PROVIDERS for api in APIS]


@dataclass
class Streams:
    gw: Gateway
    relay: Relay


def _routes(host: str, **timeout: str) -> list[dict]:
    extra = {"timeout": timeout} if timeout else {}
    return [provider_route(p.name, f"/{p.name}", p.spec, host, p.key, **extra) for p in PROVIDERS]


@pytest.fixture(scope="module")
def mock() -> Iterator[Mock]:
    m = start_mock()
    yield m
    m.proc.terminate()
    m.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Gateway]:
    """Only ``requestTimeout`` set: the stream limits keep their (generous) defaults."""
    config = listener_config(
        _routes(f"127.0.0.1:{mock.port}"), requestTimeout=f"{REQUEST_TIMEOUT}s", sidecarTimeout="2s"
    )
    with running([], lambda: launch(tmp_path_factory.mktemp("streams-plain"), config, mock)) as gw:
        yield gw


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Streams]:
    relay = Relay(mock.port)
    routes = _routes(relay.host)
    # A route whose own timeout policy sets the stream limits (overriding config.limits).
    routes.append(
        provider_route(
            "short",
            "/short",
            {"openAI": {}},
            relay.host,
            OPENAI_KEY,
            timeout={"streamIdleTimeout": "0.5s", "streamMaxDuration": "1s"},
        )
    )
    # Several providers: the upstream phase names each attempt's upstream for the stream relay.
    routes.append(failover_route("failover", "/failover", relay.host, f"127.0.0.1:{mock.port}"))
    config = listener_config(
        routes,
        requestTimeout=f"{REQUEST_TIMEOUT}s",
        streamIdleTimeout=f"{IDLE}s",
        streamMaxDuration=f"{MAX}s",
        sidecarTimeout="2s",
    )
    try:
        with running([], lambda: launch(tmp_path_factory.mktemp("streams"), config, mock)) as gw:
            yield Streams(gw, relay)
    finally:
        relay.close()


@pytest.fixture(scope="module")
def unrelayed(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Streams]:
    """``limits.streamRelay: false``: streams' provider leg goes from Envoy straight to the provider."""
    relay = Relay(mock.port)
    config = listener_config(
        _routes(relay.host), requestTimeout=f"{REQUEST_TIMEOUT}s", sidecarTimeout="2s", streamRelay=False
    )
    try:
        with running([], lambda: launch(tmp_path_factory.mktemp("streams-unrelayed"), config, mock)) as gw:
            yield Streams(gw, relay)
    finally:
        relay.close()


@pytest.fixture
def relay(streams: Streams) -> Iterator[Relay]:
    streams.relay.fault = None
    yield streams.relay
    streams.relay.fault = None


# --- helpers ---------------------------------------------------------------------------------------


def request(provider: str, api: str, stream: bool = True) -> tuple[str, dict]:
    p = BY_NAME[provider]
    messages = [{"role": "user", "content": PROMPT}]
    if api == "chat":
        return f"/{provider}/v1/chat/completions", {
            "model": p.chat_model,
            "stream": stream,
            "messages": messages,
        }
    body = {"model": p.messages_model, "max_tokens": 512, "stream": stream, "messages": messages}
    return f"/{provider}/v1/messages", body


@dataclass
class Received:
    status: int
    body: bytes
    error: str | None  # what the HTTP client reported when the body did not end well
    seconds: float
    request_id: str | None


def stream(gw: Gateway, path: str, body: dict, headers: dict[str, str] | None = None) -> Received:
    started = time.monotonic()
    data, error, status, rid = b"", None, 0, None
    try:
        with httpx.stream("POST", gw.url + path, json=body, headers=headers or {}, timeout=15) as resp:
            status, rid = resp.status_code, resp.headers.get("x-gateway-request-id")
            for chunk in resp.iter_raw():
                data += chunk
    except httpx.HTTPError as exc:
        error = repr(exc)
    return Received(status, data, error, time.monotonic() - started, rid)


def sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each event; the body must be whole events only."""
    text = body.decode()
    assert text.endswith("\n\n"), f"the stream does not end on an event boundary: {text[-200:]!r}"
    events = []
    for block in text.strip("\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def assert_error_ending(api: str, got: Received, code: str) -> dict:
    """The stream ended cleanly, its last event an error in the client API's format; the error."""
    assert got.status == 200 and got.error is None, got
    events = sse(got.body)
    if api == "chat":
        assert events[-1] == (None, "[DONE]"), events[-3:]
        error = json.loads(events[-2][1])["error"]
        assert error["code"] == code and error["type"] == "server_error" and error["message"]
        assert all(not d.startswith('{"error"') for _, d in events[:-2])  # one error, at the end
        return error  # type: ignore[no-any-return]
    name, data = events[-1]
    body = json.loads(data)
    assert name == "error" and body["type"] == "error", events[-2:]
    assert body["error"]["message"] and body["error"]["type"] in ("api_error", "timeout_error")
    return body["error"]  # type: ignore[no-any-return]


def _is_json(data: str) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def assert_complete(api: str, got: Received) -> None:
    assert got.status == 200 and got.error is None, got
    events = sse(got.body)
    if api == "chat":
        assert events[-1] == (None, "[DONE]")
        assert not any(d.startswith('{"error"') for _, d in events)
    else:
        assert events[-1][0] == "message_stop", events[-2:]
        assert not any(name == "error" for name, _ in events)


def usage_record(gw: Gateway, request_id: str | None, timeout: float = 8.0) -> dict[str, Any]:
    assert request_id
    log = Path(gw.stack.workdir) / "extproc.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


# --- 1. timeouts: a healthy stream is not cut by requestTimeout ------------------------------------


@pytest.mark.parametrize(
    ("provider", "api"),
    [("openai", "chat"), ("gemini", "chat"), ("anthropic", "messages"), ("bedrock", "messages")],
)
def test_a_stream_that_keeps_delivering_outlives_the_request_timeout(
    plain: Gateway, provider: str, api: str
) -> None:
    path, body = request(provider, api)
    got = stream(plain, path, body, PACED)
    assert got.seconds > REQUEST_TIMEOUT * 1.5, "the stream was not long enough to test anything"
    assert_complete(api, got)
    assert usage_record(plain, got.request_id)["outcome"] == "ok"


def test_a_non_streamed_answer_keeps_the_request_timeout(plain: Gateway) -> None:
    path, body = request("openai", "chat", stream=False)
    started = time.monotonic()
    resp = httpx.post(plain.url + path, json=body, headers={"x-mock-delay-ms": "3000"}, timeout=15)
    took = time.monotonic() - started
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "provider_timeout"
    assert took < REQUEST_TIMEOUT + 1.0


def test_a_stream_whose_provider_never_answers_is_a_504_after_the_request_timeout(streams: Streams) -> None:
    """Before the provider's headers, a stream waits no longer than a non-streamed answer would."""
    path, body = request("anthropic", "messages")
    started = time.monotonic()
    resp = httpx.post(streams.gw.url + path, json=body, headers={"x-mock-delay-ms": "4000"}, timeout=15)
    took = time.monotonic() - started
    assert resp.status_code == 504, resp.text
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "timeout_error"
    assert took < REQUEST_TIMEOUT + 1.0


# --- 2. stalled and cut provider connections --------------------------------------------------------


@pytest.mark.parametrize(("provider", "api"), CASES)
def test_a_stalled_stream_ends_with_an_error_event(
    streams: Streams, relay: Relay, provider: str, api: str
) -> None:
    relay.fault = Fault("stall", 300)
    path, body = request(provider, api)
    got = stream(streams.gw, path, body, PACED)
    assert IDLE <= got.seconds < IDLE + 1.5, got.seconds
    error = assert_error_ending(api, got, "stream_idle_timeout")
    assert "1s" in error["message"] or "1.0s" in error["message"]
    record = usage_record(streams.gw, got.request_id)
    assert record["outcome"] == "stream_cut" and "nothing" in record["error"]


@pytest.mark.parametrize(("provider", "api"), [("openai", "chat"), ("bedrock", "messages")])
def test_a_stream_longer_than_its_maximum_ends_with_an_error_event(
    streams: Streams, provider: str, api: str
) -> None:
    path, body = request(provider, api)
    got = stream(streams.gw, path, body, {**PACED, "x-mock-chunk-delay-ms": "150"})  # about 4.5 s
    assert MAX <= got.seconds < MAX + 1.5, got.seconds
    assert_error_ending(api, got, "stream_max_duration")
    assert usage_record(streams.gw, got.request_id)["outcome"] == "stream_cut"


def test_a_routes_timeout_policy_sets_its_own_stream_limits(streams: Streams, relay: Relay) -> None:
    relay.fault = Fault("stall", 40)  # silent from about 0.1 s on: idle (0.5 s) before the maximum (1 s)
    got = stream(streams.gw, "/short/v1/chat/completions", request("openai", "chat")[1], PACED)
    assert 0.5 <= got.seconds < 1.0, got.seconds
    assert_error_ending("chat", got, "stream_idle_timeout")
    relay.fault = None
    got = stream(streams.gw, "/short/v1/chat/completions", request("openai", "chat")[1], PACED)
    assert 1.0 <= got.seconds < 2.0, got.seconds
    assert_error_ending("chat", got, "stream_max_duration")


@pytest.mark.parametrize("kind", ["fin", "rst"])
@pytest.mark.parametrize(("provider", "api"), CASES)
def test_a_cut_provider_connection_ends_with_an_error_event(
    streams: Streams, relay: Relay, provider: str, api: str, kind: str
) -> None:
    """The provider's connection closes (FIN) or resets (RST) after the headers and some events:
    the stream relay ends Envoy's body cleanly and the client's stream ends with the error event
    in its format when the cut happens (not at a timeout), never looking complete; the record
    says stream_cut."""
    relay.fault = Fault(kind, 700)  # past the first events of every format
    path, body = request(provider, api)
    got = stream(streams.gw, path, body, PACED)
    error = assert_error_ending(api, got, "stream_truncated")
    assert "ended early" in error["message"]
    assert got.seconds < MAX, got.seconds  # ended by the cut (stream_truncated), not a timer
    events = sse(got.body)
    assert len(events) > (2 if api == "chat" else 1), events  # events came before the cut
    assert not any(name == "message_stop" for name, _ in events), events[-3:]
    for _, data in events:  # every event whole: never half a JSON document before the error
        assert data == "[DONE]" or _is_json(data), events
    record = usage_record(streams.gw, got.request_id)
    assert record["outcome"] == "stream_cut" and record["http_status_code"] == 200, record
    assert relay.cuts


@pytest.mark.parametrize("kind", ["fin", "rst"])
@pytest.mark.parametrize(("provider", "api"), CASES)
def test_the_official_sdks_raise_at_a_cut_providers_error_event(
    streams: Streams, relay: Relay, provider: str, api: str, kind: str
) -> None:
    """What an application sees: the events before the cut, then the SDK's API error (not a
    connection error, and not a stream that just stops)."""
    relay.fault = Fault(kind, 700)
    body = request(provider, api)[1]
    base = f"{streams.gw.url}/{provider}"
    got: list[object] = []
    if api == "chat":
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=15)
        with pytest.raises(openai.APIError) as raised:
            for chunk in client.chat.completions.create(**body, extra_headers=PACED):
                got.append(chunk)
        assert not isinstance(raised.value, openai.APIConnectionError), raised.value
    else:
        messages = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=15)
        body = {k: v for k, v in body.items() if k != "stream"}
        with pytest.raises(anthropic.APIError) as raised:  # noqa: SIM117 (the error is raised inside)
            with messages.messages.stream(**body, extra_headers=PACED) as events:
                for event in events:
                    got.append(event)
        assert not isinstance(raised.value, anthropic.APIConnectionError), raised.value
    assert "ended early" in str(raised.value), raised.value
    assert got, "no event arrived before the cut"


@pytest.mark.parametrize("kind", ["fin", "rst"])
@pytest.mark.parametrize("api", APIS)
def test_a_cut_on_a_failover_route_ends_with_an_error_event(
    streams: Streams, relay: Relay, api: str, kind: str
) -> None:
    """The primary (Anthropic, through the test relay) cuts after its headers: too late to fail
    over (the client has the 200), so the stream ends with the error event in the client's format."""
    relay.fault = Fault(kind, 700)
    if api == "chat":
        path, body = "/failover/v1/chat/completions", {"model": "any", "stream": True, "messages": []}
    else:
        path = "/failover/v1/messages"
        body = {"model": "any", "max_tokens": 64, "stream": True, "messages": []}
    body["messages"] = [{"role": "user", "content": PROMPT}]
    got = stream(streams.gw, path, body, PACED)
    assert_error_ending(api, got, "stream_truncated")
    record = usage_record(streams.gw, got.request_id)
    assert record["outcome"] == "stream_cut" and record["provider"] == "primary", record
    assert relay.cuts


@pytest.mark.parametrize("kind", ["fin", "rst"])
@pytest.mark.parametrize(("provider", "api"), [("openai", "chat"), ("bedrock", "messages")])
def test_without_the_stream_relay_a_cut_resets_the_clients_stream(
    unrelayed: Streams, provider: str, api: str, kind: str
) -> None:
    """What ``streamRelay: false`` trades the relay's cost for: Envoy can only reset the client's
    stream, which no HTTP client mistakes for a complete body; the record still says stream_cut."""
    unrelayed.relay.fault = Fault(kind, 700)
    path, body = request(provider, api)
    got = stream(unrelayed.gw, path, body, PACED)
    assert got.status == 200 and got.error is not None, got
    assert b"[DONE]" not in got.body and b"message_stop" not in got.body and b"ended early" not in got.body
    record = usage_record(unrelayed.gw, got.request_id)
    assert record["outcome"] == "stream_cut" and record["http_status_code"] == 200


# --- 3. stream endings -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "bedrock"])
def test_an_in_band_provider_error_is_followed_by_done(streams: Streams, provider: str) -> None:
    """Passthrough (openai) and translated (the others) OpenAI streams end the same way."""
    path, body = request(provider, "chat")
    got = stream(streams.gw, path, body, {"x-mock-stream-error-after": "2"})
    assert got.status == 200 and got.error is None, got
    events = sse(got.body)
    assert events[-1] == (None, "[DONE]"), events[-3:]
    assert "error" in json.loads(events[-2][1])
    assert [d for _, d in events].count("[DONE]") == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai", "bedrock"])
def test_an_in_band_provider_error_ends_a_messages_stream(streams: Streams, provider: str) -> None:
    path, body = request(provider, "messages")
    got = stream(streams.gw, path, body, {"x-mock-stream-error-after": "2"})
    assert got.status == 200 and got.error is None, got
    events = sse(got.body)
    assert events[-1][0] == "error" and json.loads(events[-1][1])["type"] == "error"
    assert sum(1 for name, _ in events if name == "error") == 1
