"""The request pipeline through the real Envoy: the usage record, request shaping, what reaches a provider."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    CLIENT_KEY,
    MOCK_CONTROLS,
    OPENAI_KEY,
    Gateway,
    Mock,
    access_log_entry,
    failover_route,
    gateway_with_own_mock,
    provider_route,
    start_mock,
)
from tests.e2e.test_client_apis import CHAT, ROUTES, VERTEX_CLAUDE

SHAPING = {
    "modelAliases": {"fast": "gpt-4o-mini", "claude-*": "claude-haiku-4-5", "claude-3-*": "claude-3-opus"},
    "defaults": {"temperature": 0.2, "top_p": 0.9},
    "overrides": {"max_tokens": 64},
    "prompts": {
        "prepend": [{"role": "system", "content": "Be concise."}],
        "append": [{"role": "user", "content": "Answer in English."}],
    },
}


@pytest.fixture(scope="module")
def primary_429() -> Iterator[Mock]:
    mock = start_mock("--force-status", "429")
    yield mock
    mock.proc.terminate()
    mock.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, primary_429: Mock) -> Iterator[Gateway]:
    def routes(host: str) -> list[dict]:
        out = [provider_route(r.name, f"/{r.name}", r.spec, host, r.key) for r in ROUTES]
        out += [
            provider_route(
                "shaped-openai", "/shaped-openai", {"openAI": {}}, host, OPENAI_KEY, ai=dict(SHAPING)
            ),
            provider_route(
                "shaped-anthropic",
                "/shaped-anthropic",
                {"anthropic": {}},
                host,
                ANTHROPIC_KEY,
                ai=dict(SHAPING),
            ),
            provider_route(
                "passthrough",
                "/passthrough",
                {"openAI": {}},
                host,
                OPENAI_KEY,
                ai={"routes": {"*": "passthrough"}},
            ),
            failover_route("failover", "/failover", f"127.0.0.1:{primary_429.port}", host),
            failover_route("failover-ok", "/failover-ok", host, host),
        ]
        return out

    with gateway_with_own_mock(tmp_path_factory.mktemp("pipeline"), routes) as gateway:
        yield gateway


def usage_record(gw: Gateway, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The extproc's JSON line for ``request_id`` (written off the event loop, so it may lag a little)."""
    log = Path(gw.stack.workdir) / "extproc.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


def post(gw: Gateway, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=20)


def sse_chunks(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


CHAT_MODEL = {name: model for name, (model, _) in CHAT.items()}


# --- the usage record --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(CHAT_MODEL))
def test_usage_record_chat(gw: Gateway, route: str) -> None:
    resp = post(
        gw,
        f"/{route}/v1/chat/completions",
        {"model": CHAT_MODEL[route], "messages": [{"role": "user", "content": "count my tokens"}]},
    )
    assert resp.status_code == 200, resp.text
    request_id = resp.headers["x-gateway-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    usage = resp.json()["usage"]
    record = usage_record(gw, request_id)
    assert record["type"] == "llm_request"
    assert record["route"] == route and record["api"] == "completions"
    assert record["http_status_code"] == 200 and record["outcome"] == "ok"
    assert record["provider"] == route and record["stream"] is False
    assert record["request_model"] == CHAT_MODEL[route]
    assert record["response_model"]
    assert record["input_tokens"] == usage["prompt_tokens"] > 0
    assert record["output_tokens"] == usage["completion_tokens"] > 0
    assert record["total_tokens"] == usage["total_tokens"]
    assert record["attempt_count"] == 1
    assert record["attempts"] == [{"number": 1, "provider": route, "outcome": "answered", "status": 200}]
    assert record["duration_ms"] > 0 and record["time_to_first_byte_ms"] > 0


@pytest.mark.parametrize("route", list(CHAT_MODEL))
def test_usage_record_chat_stream_without_usage_chunk(gw: Gateway, route: str) -> None:
    """The gateway asks the provider for usage; a client that did not ask sees no usage chunk."""
    body = {
        "model": CHAT_MODEL[route],
        "stream": True,
        "messages": [{"role": "user", "content": "stream and count"}],
    }
    asked = post(gw, f"/{route}/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    assert asked.status_code == 200, asked.text
    expected = sse_chunks(asked.text)[-1]["usage"]
    resp = post(gw, f"/{route}/v1/chat/completions", body)
    assert resp.status_code == 200, resp.text
    chunks = sse_chunks(resp.text)
    assert chunks and all("usage" not in c or c["usage"] is None for c in chunks), chunks[-1]
    assert all(c["choices"] for c in chunks)  # no usage-only chunk
    assert resp.text.rstrip().endswith("data: [DONE]")
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["stream"] is True and record["outcome"] == "ok"
    assert record["input_tokens"] == expected["prompt_tokens"] > 0
    assert record["output_tokens"] == expected["completion_tokens"] > 0
    assert record["time_to_first_token_ms"] is not None


def test_openai_stream_is_unchanged_when_the_client_did_not_ask_for_usage(gw: Gateway) -> None:
    """Byte for byte what the provider sends to a client that did not ask (ids aside, the mock counts them)."""
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "the same bytes"}]}
    through = post(gw, "/openai/v1/chat/completions", body)
    direct = httpx.post(
        f"{gw.mock.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {OPENAI_KEY}"}
    )
    assert through.status_code == direct.status_code == 200

    def norm(text: str) -> str:
        return re.sub(r"chatcmpl-mock\d+", "chatcmpl-mockN", text)

    assert norm(through.text) == norm(direct.text)
    sent = json.loads(gw.mock.requests()[-2]["body"])
    assert sent["stream_options"] == {"include_usage": True}  # what the gateway asked the provider for


MESSAGES_MODEL = {**{name: model for name, (model, _) in CHAT.items()}, "vertex-claude": VERTEX_CLAUDE[0]}


@pytest.mark.parametrize("case", list(MESSAGES_MODEL))
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
def test_usage_record_messages(gw: Gateway, case: str, streaming: bool) -> None:
    route = "vertex" if case == "vertex-claude" else case
    client = anthropic.Anthropic(base_url=f"{gw.url}/{route}", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    args: dict[str, Any] = {
        "model": MESSAGES_MODEL[case],
        "max_tokens": 128,
        "messages": [{"role": "user", "content": "count tokens for a messages client"}],
    }
    if streaming:
        with client.messages.with_streaming_response.create(**args, stream=True) as raw:
            request_id = raw.headers["x-gateway-request-id"]
            events = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]
        start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
        delta = [e for e in events if e["type"] == "message_delta"][-1]["usage"]
        # A translated stream learns the input count only at the end: message_delta carries it then.
        final = {**start, **delta}
        input_tokens = final["input_tokens"] + (final.get("cache_read_input_tokens") or 0)
        output_tokens = delta["output_tokens"]
    else:
        raw = client.messages.with_raw_response.create(**args)
        request_id = raw.headers["x-gateway-request-id"]
        message = raw.parse()
        input_tokens = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
        output_tokens = message.usage.output_tokens
    record = usage_record(gw, request_id)
    assert record["api"] == "messages" and record["stream"] is streaming
    assert record["outcome"] == "ok" and record["provider"] == route
    assert record["input_tokens"] == input_tokens > 0
    assert record["output_tokens"] == output_tokens > 0


@pytest.mark.parametrize(
    ("route", "model"),
    [
        ("openai", "text-embedding-3-small"),
        ("gemini", "gemini-embedding-001"),
        ("bedrock", "amazon.titan-embed-text-v2:0"),
    ],
)
def test_usage_record_embeddings(gw: Gateway, route: str, model: str) -> None:
    resp = post(gw, f"/{route}/v1/embeddings", {"model": model, "input": "embed me"})
    assert resp.status_code == 200, resp.text
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["api"] == "embeddings" and record["outcome"] == "ok"
    if route == "gemini":
        assert record["input_tokens"] is None  # Gemini's batchEmbedContents reports no token counts
    else:
        assert record["input_tokens"] == resp.json()["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
def test_usage_record_after_failover_counts_the_attempt_that_answered(gw: Gateway, streaming: bool) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "fail over please"}],
        "stream": streaming,
    }
    if streaming:
        body["stream_options"] = {"include_usage": True}
    resp = post(gw, "/failover/v1/chat/completions", body)
    assert resp.status_code == 200, resp.text
    usage = sse_chunks(resp.text)[-1]["usage"] if streaming else resp.json()["usage"]
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["provider"] == "secondary" and record["provider_kind"] == "openai"
    assert record["response_model"] == "gpt-4o"
    assert record["attempt_count"] == 2
    assert record["attempts"] == [
        {"number": 1, "provider": "primary", "outcome": "retried", "status": None},
        {"number": 2, "provider": "secondary", "outcome": "answered", "status": 200},
    ]
    assert record["input_tokens"] == usage["prompt_tokens"]
    assert record["output_tokens"] == usage["completion_tokens"]


def test_usage_record_for_a_provider_error(gw: Gateway) -> None:
    resp = post(
        gw,
        "/anthropic/v1/chat/completions",
        {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]},
        **{"x-mock-status": "400"},
    )
    assert resp.status_code == 400
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["http_status_code"] == 400 and record["outcome"] == "provider_error"
    assert record["input_tokens"] is None


def test_usage_record_for_a_gateway_error(gw: Gateway) -> None:
    resp = post(gw, "/openai/v1/chat/completions", {"model": "gpt-4o", "messages": "not a list"})
    assert resp.status_code == 400
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["outcome"] == "gateway_error" and record["http_status_code"] == 400
    assert record["route"] == "openai" and "messages" in record["error"]


def test_usage_record_when_the_client_goes_away_mid_stream(gw: Gateway) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "stream": True,
        "messages": [{"role": "user", "content": "a long long answer"}],
    }
    headers = {"x-mock-chunk-delay-ms": "300", "x-mock-chunk-bytes": "8"}
    with httpx.stream(
        "POST", f"{gw.url}/anthropic/v1/chat/completions", json=body, headers=headers, timeout=20
    ) as resp:
        request_id = resp.headers["x-gateway-request-id"]
        next(resp.iter_raw())
    record = usage_record(gw, request_id, timeout=10)
    assert record["outcome"] in ("client_disconnected", "stream_cut")
    assert record["error"]


def test_client_request_id_is_kept_apart_from_the_gateways(gw: Gateway) -> None:
    resp = post(
        gw,
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        **{"x-request-id": "client-chosen-id"},
    )
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["client_request_id"] == "client-chosen-id"
    assert record["request_id"] != "client-chosen-id"


# --- request shaping ----------------------------------------------------------------------------------


def last_sent(gw: Gateway) -> dict[str, Any]:
    return json.loads(gw.mock.requests()[-1]["body"])  # type: ignore[no-any-return]


def test_shaping_chat_client(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/shaped-openai/v1", api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(
        model="fast", temperature=0.7, messages=[{"role": "user", "content": "hello"}]
    )
    sent = last_sent(gw)
    assert sent["model"] == "gpt-4o-mini"  # alias
    assert sent["temperature"] == 0.7  # the client's own value: a default only fills what is missing
    assert sent["top_p"] == 0.9  # default
    assert sent["max_tokens"] == 64  # override
    assert sent["messages"] == [
        {"role": "system", "content": "Be concise."},
        {"role": "user", "content": "hello"},
        {"role": "user", "content": "Answer in English."},
    ]


def test_shaping_longest_wildcard_alias_wins_for_a_chat_client_on_anthropic(gw: Gateway) -> None:
    resp = post(
        gw,
        "/shaped-anthropic/v1/chat/completions",
        {"model": "claude-3-sonnet", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 200, resp.text
    sent = last_sent(gw)
    assert sent["model"] == "claude-3-opus"  # "claude-3-*" is longer than "claude-*"
    assert sent["system"] == "Be concise."
    # Anthropic wants alternating turns: the appended user text joins the client's last user turn.
    assert sent["messages"][-1]["content"][-1] == {"type": "text", "text": "Answer in English."}
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.2
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["request_model"] == "claude-3-opus"


def test_shaping_messages_client(gw: Gateway) -> None:
    client = anthropic.Anthropic(base_url=f"{gw.url}/shaped-anthropic", api_key=CLIENT_KEY, max_retries=0)
    client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=500,
        system="You are a pirate.",
        messages=[{"role": "user", "content": "hello"}],
    )
    sent = last_sent(gw)
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["max_tokens"] == 64
    assert sent["temperature"] == 0.2
    assert sent["system"] == [
        {"type": "text", "text": "Be concise."},
        {"type": "text", "text": "You are a pirate."},
    ]
    assert sent["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "user", "content": "Answer in English."},
    ]


def test_shaping_messages_client_translated_to_openai(gw: Gateway) -> None:
    resp = post(
        gw,
        "/shaped-openai/v1/messages",
        {"model": "fast", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 200, resp.text
    sent = last_sent(gw)
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Be concise."}]}
    assert sent["messages"][-1]["content"] in (
        "Answer in English.",
        [{"type": "text", "text": "Answer in English."}],
    )


# --- what reaches a provider --------------------------------------------------------------------------

CLIENT_HEADERS = {
    "anthropic-version": "2020-01-01",
    "anthropic-beta": "prompt-caching-2024-07-31",
    "openai-organization": "org-client",
    "openai-project": "proj-client",
    "x-custom-client-header": "secret-ish",
    "cookie": "session=abc",
    "x-api-key": CLIENT_KEY,
    "authorization": f"Bearer {CLIENT_KEY}",
    "x-forwarded-for": "10.9.8.7",
}


def test_only_allowed_headers_reach_openai(gw: Gateway) -> None:
    gw.mock.clear()
    resp = post(
        gw,
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        **CLIENT_HEADERS,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert resp.status_code == 200, resp.text
    seen = gw.mock.requests()[-1]["headers"]
    for name in CLIENT_HEADERS:
        if name != "authorization":
            assert name not in seen, name
    assert seen["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c")


def test_anthropic_sees_its_own_beta_header_and_its_own_version(gw: Gateway) -> None:
    resp = post(
        gw,
        "/anthropic/v1/chat/completions",
        {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]},
        **CLIENT_HEADERS,
    )
    assert resp.status_code == 200, resp.text
    seen = gw.mock.requests()[-1]["headers"]
    assert seen["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert seen["anthropic-version"] == "2023-06-01"  # the gateway's, not the client's
    assert seen["x-api-key"] == ANTHROPIC_KEY
    for name in (
        "openai-organization",
        "openai-project",
        "x-custom-client-header",
        "cookie",
        "x-forwarded-for",
        "authorization",
    ):
        assert name not in seen, name


def test_failover_attempt_carries_nothing_of_the_earlier_provider(gw: Gateway, primary_429: Mock) -> None:
    primary_429.clear()
    gw.mock.clear()
    resp = post(
        gw,
        "/failover/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}]},
        **CLIENT_HEADERS,
    )
    assert resp.status_code == 200, resp.text
    (first,) = primary_429.requests()
    assert (
        first["headers"]["x-api-key"] == ANTHROPIC_KEY
        and first["headers"]["anthropic-version"] == "2023-06-01"
    )
    (second,) = gw.mock.requests()
    assert second["path"] == "/v1/chat/completions"
    assert second["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    for name in (
        "anthropic-version",
        "anthropic-beta",
        "x-api-key",
        "openai-organization",
        "cookie",
        "x-custom-client-header",
    ):
        assert name not in second["headers"], name


def test_route_forward_headers_let_named_client_headers_through(gw: Gateway) -> None:
    assert MOCK_CONTROLS == {"forwardHeaders": ["x-mock-*"]}
    resp = post(
        gw,
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        **{"x-mock-status": "418"},
    )
    assert resp.status_code == 418  # the mock obeyed a header the route allows


# --- passthrough is opt-in ----------------------------------------------------------------------------


def test_unknown_path_is_a_404_without_a_passthrough_route(gw: Gateway) -> None:
    gw.mock.clear()
    for method in ("GET", "DELETE", "POST"):
        resp = httpx.request(
            method, f"{gw.url}/openai/v1/files/file-123", timeout=10, json={} if method == "POST" else None
        )
        assert resp.status_code == 404, resp.text
        err = resp.json()["error"]
        assert err["code"] == "unknown_path" and "passthrough" in err["message"]
    resp = post(gw, "/anthropic/v1/complete", {"prompt": "x"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_path"
    assert gw.mock.requests() == []


def test_passthrough_route_forwards_with_the_gateways_key(gw: Gateway) -> None:
    gw.mock.clear()
    resp = httpx.get(
        f"{gw.url}/passthrough/v1/files", headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10
    )
    (seen,) = gw.mock.requests()
    assert seen["path"] == "/passthrough/v1/files" or seen["path"].endswith("/v1/files")
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert resp.status_code < 500


# --- what a provider cannot express is a 400 naming it ---------------------------------------------


@pytest.mark.parametrize("route", ["anthropic", "gemini", "vertex", "bedrock"])
def test_logprobs_to_a_provider_without_them_is_a_400(gw: Gateway, route: str) -> None:
    gw.mock.clear()
    body = {"model": CHAT_MODEL[route], "logprobs": True, "messages": [{"role": "user", "content": "x"}]}
    resp = post(gw, f"/{route}/v1/chat/completions", body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == "logprobs" and "logprobs" in err["message"]
    assert gw.mock.requests() == []  # refused before it cost anything


def test_logprobs_reach_openai_which_has_them(gw: Gateway) -> None:
    body = {"model": "gpt-4o", "logprobs": True, "messages": [{"role": "user", "content": "x"}]}
    resp = post(gw, "/openai/v1/chat/completions", body)
    assert resp.status_code == 200, resp.text
    assert json.loads(gw.mock.requests()[-1]["body"])["logprobs"] is True


def test_unknown_parameter_for_a_translated_provider_is_a_400(gw: Gateway) -> None:
    body = {"model": "claude-sonnet-4-6", "frobnicate": 3, "messages": [{"role": "user", "content": "x"}]}
    resp = post(gw, "/anthropic/v1/chat/completions", body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "frobnicate"


def test_failover_with_a_named_model_sends_the_right_length(gw: Gateway) -> None:
    """The OpenAI attempt sends the client's own body after the Anthropic attempt sent a longer one."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    resp = httpx.post(f"{gw.url}/failover/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    sent = gw.mock.requests()[-1]
    assert int(sent["headers"]["content-length"]) == len(sent["body"].encode())


def test_access_log_names_the_request_the_gateway_answered_itself(gw: Gateway) -> None:
    resp = httpx.get(f"{gw.url}/openai/v1/files/file-9", timeout=10)
    assert resp.status_code == 404
    request_id = resp.headers["x-gateway-request-id"]
    entry = access_log_entry(gw, lambda e: e["id"] == request_id)
    assert (entry["method"], entry["path"], entry["protocol"], entry["status"]) == (
        "GET",
        "/openai/v1/files/file-9",
        "HTTP/1.1",
        404,
    ), entry
