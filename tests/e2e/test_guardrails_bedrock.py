"""The bedrockGuardrails guard through the real Envoy: boto3's ApplyGuardrail against a test endpoint
speaking its wire protocol (tests/bedrock_guardrail_server.py), on requests and answers, whole and
streamed, from chat completions and Messages clients; an unreachable guardrail fails closed or open.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from extproc.ports import free_port
from tests.bedrock_guardrail_server import DEFAULT_BLOCKED, Guardrail, GuardrailServer
from tests.e2e.conftest import BEDROCK_KEY, Gateway, provider_route
from tests.e2e.guardrail_helpers import (
    CLIENTS,
    PROMPT_LOGGING,
    answer_text,
    error_of,
    guarded_gateway,
    metric,
    provider_texts,
    record_of,
    reply_pieces,
    route,
    send,
    stream_error,
)

KEY_ID, SECRET = "AKIDE2EGUARDRAIL01", "e2e-guardrail-secret"
CHAIN_KEY_ID, CHAIN_SECRET = "AKIDE2ECHAIN000001", "e2e-chain-secret"
API_KEY = "e2e-bedrock-api-key"
SEED_REASON = "BLOCKED: PII detected: EMAIL"
SEED_MESSAGE = "Request rejected by Bedrock Guardrails: BLOCKED: PII detected: EMAIL"


@pytest.fixture(scope="module")
def guardrail() -> Iterator[GuardrailServer]:
    guardrails = {
        # The seed's guardrail blocks emails; its blocked messaging is what the seed's client read.
        ("grseed", "1"): Guardrail(pii={"EMAIL": "BLOCKED"}, blocked_input=SEED_REASON),
        ("grmask", "DRAFT"): Guardrail(pii={"EMAIL": "ANONYMIZED"}, words=("forbidden-topic",)),
    }
    keys = {KEY_ID: SECRET, CHAIN_KEY_ID: CHAIN_SECRET}
    server = GuardrailServer(guardrails, keys, bearer=API_KEY).start()
    yield server
    server.stop()


def bedrock(server_url: str, identifier: str, version: str, **extra: object) -> dict:
    return {
        "bedrockGuardrails": {
            "guardrailIdentifier": identifier,
            "guardrailVersion": version,
            "region": "us-west-2",
            "endpointUrl": server_url,
            "timeout": "3s",
            "policies": {
                "backendAuth": {"aws": {"accessKeyId": KEY_ID, "secretAccessKey": "$E2E_GUARD_SECRET"}}
            },
            **extra,
        }
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, guardrail: GuardrailServer) -> Iterator[Gateway]:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    def routes(host: str, _: str) -> list[dict]:
        seed = {"request": [bedrock(guardrail.url, "grseed", "1")]}
        mask = bedrock(guardrail.url, "grmask", "DRAFT")
        both = {
            "request": [mask],
            "response": [{**mask, "bedrockGuardrails": {**mask["bedrockGuardrails"], "streamBatch": 16}}],
        }
        chain = {"request": [bedrock(guardrail.url, "grseed", "1", policies=None)]}
        key = {
            "request": [
                bedrock(guardrail.url, "grseed", "1", policies={"backendAuth": {"key": "$E2E_GUARD_API_KEY"}})
            ]
        }
        return [
            # The seed's route: a Bedrock provider behind /guardrail/bedrock.
            provider_route(
                "guardrail-bedrock",
                "/guardrail/bedrock",
                {"bedrock": {"region": "us-west-2"}},
                host,
                BEDROCK_KEY,
                ai={"promptGuard": seed},
            ),
            route("bgseed-anthropic", "anthropic", host, seed),
            route("bgmask-openai", "openai", host, both),
            route("bgmask-anthropic", "anthropic", host, both),
            route("bgmask-bedrock", "bedrock", host, both),
            route("bgchain-openai", "openai", host, chain),
            route("bgkey-openai", "openai", host, key),
            route("bgdown-openai", "openai", host, {"request": [bedrock(down, "grseed", "1")]}),
            route(
                "bgdownopen-openai",
                "openai",
                host,
                {"request": [bedrock(down, "grseed", "1", failureMode="failOpen")]},
            ),
        ]

    # The extproc sidecar reads these at start: a secret from the environment, the AWS credential
    # chain's first link, and a Bedrock API key.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("E2E_GUARD_SECRET", SECRET)
        env.setenv("AWS_ACCESS_KEY_ID", CHAIN_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", CHAIN_SECRET)
        env.setenv("E2E_GUARD_API_KEY", API_KEY)
        with guarded_gateway(tmp_path_factory.mktemp("guard-bedrock"), routes, PROMPT_LOGGING) as gateway:
            yield gateway


# --- requests ------------------------------------------------------------------------------------


def test_the_seed_request_is_rejected_with_the_seed_message(gw: Gateway, guardrail: GuardrailServer) -> None:
    gw.mock.clear()
    guardrail.clear()
    resp = httpx.post(
        gw.url + "/guardrail/bedrock/v1/chat/completions",
        json={
            "model": "global.anthropic.claude-sonnet-4-20250514-v1:0",
            "messages": [{"role": "user", "content": "hi my email is christian@solo.io"}],
        },
        timeout=20,
    )
    assert resp.status_code == 403, resp.text
    assert error_of("chat", resp) == (SEED_MESSAGE, "guardrail_rejected")
    assert gw.mock.requests() == []  # the provider never saw it
    call = guardrail.received[-1]
    assert call.path == "/guardrail/grseed/version/1/apply" and call.auth == f"sigv4:{KEY_ID}:us-west-2"
    assert call.body == {
        "source": "INPUT",
        "content": [{"text": {"text": "hi my email is christian@solo.io"}}],
    }
    record = record_of(gw, resp)
    assert record["guardrails"] == [
        {
            "phase": "request",
            "guard": "bedrockGuardrails",
            "action": "reject",
            "matched": ["pii:EMAIL"],
            "reason": SEED_REASON,
        }
    ]
    assert "christian@solo.io" not in str(record["guardrails"])
    assert metric(gw, "agentgateway_guardrail_checks_total", guard="bedrockGuardrails", action="reject") >= 1


def test_a_messages_client_gets_the_rejection_in_its_shape(gw: Gateway) -> None:
    resp = send(gw, "messages", "bgseed-anthropic", "hi my email is christian@solo.io")
    assert resp.status_code == 403, resp.text
    assert error_of("messages", resp) == (SEED_MESSAGE, "permission_error")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_an_anonymized_prompt_reaches_the_provider_masked(
    gw: Gateway, guardrail: GuardrailServer, client: str, provider: str
) -> None:
    gw.mock.clear()
    resp = send(gw, client, f"bgmask-{provider}", "my email is christian@solo.io, help")
    assert resp.status_code == 200, resp.text
    seen = provider_texts(gw)
    assert "my email is {EMAIL}, help" in seen and "christian@solo.io" not in seen
    request_call = next(c for c in reversed(guardrail.received) if c.body["source"] == "INPUT")
    assert request_call.auth == f"sigv4:{KEY_ID}:us-west-2"
    record = record_of(gw, resp)
    assert {
        "phase": "request",
        "guard": "bedrockGuardrails",
        "action": "mask",
        "matched": ["pii:EMAIL"],
        "reason": "ANONYMIZED: PII detected: EMAIL",
    } in record["guardrails"]
    assert "{EMAIL}" in str(record["prompt"]) and "christian@solo.io" not in str(record)


@pytest.mark.parametrize(
    ("route_name", "auth"),
    [("bgchain-openai", f"sigv4:{CHAIN_KEY_ID}:us-west-2"), ("bgkey-openai", "bearer")],
)
def test_credentials_from_the_chain_or_a_bedrock_api_key(
    gw: Gateway, guardrail: GuardrailServer, route_name: str, auth: str
) -> None:
    resp = send(gw, "chat", route_name, "a clean question")
    assert resp.status_code == 200, resp.text
    assert guardrail.received[-1].auth == auth
    assert record_of(gw, resp)["guardrails"] == [
        {"phase": "request", "guard": "bedrockGuardrails", "action": "allow"}
    ]


@pytest.mark.parametrize(
    ("route_name", "status", "action"),
    [("bgdown-openai", 503, "fail_closed"), ("bgdownopen-openai", 200, "fail_open")],
)
def test_an_unreachable_guardrail(gw: Gateway, route_name: str, status: int, action: str) -> None:
    gw.mock.clear()
    resp = send(gw, "chat", route_name, "hi my email is christian@solo.io")
    assert resp.status_code == status, resp.text
    if status == 503:
        message, code = error_of("chat", resp)
        assert code == "guardrail_unavailable" and "bedrockGuardrails guardrail is unavailable" in message
        assert gw.mock.requests() == []
    else:
        assert "christian@solo.io" in provider_texts(gw)  # failOpen: the request went on as it was
    entry = record_of(gw, resp)["guardrails"][0]
    assert entry["action"] == action and "EndpointConnectionError" in entry["reason"]
    assert metric(gw, "agentgateway_guardrail_checks_total", guard="bedrockGuardrails", action=action) >= 1


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "bedrock"])
@pytest.mark.parametrize("client", CLIENTS)
def test_an_anonymized_answer_is_masked(
    gw: Gateway, guardrail: GuardrailServer, client: str, provider: str, stream: bool
) -> None:
    guardrail.clear()
    # Windows of 16 characters: a cut at 16 would split the address ("...to b" | "o@example.com").
    pieces = reply_pieces("Please write to b", "o@exa", "mple.com", " today")
    resp = send(gw, client, f"bgmask-{provider}", "hi", stream, pieces)
    assert resp.status_code == 200, resp.text
    assert "o@exa" not in resp.text and "mple.com" not in resp.text
    assert answer_text(client, resp) == "Please write to {EMAIL} today"
    outputs = [c.body for c in guardrail.received if c.body["source"] == "OUTPUT"]
    sent = [block["text"]["text"] for body in outputs for block in body["content"]]
    whole = "Please write to bo@example.com today"
    if stream:  # overlapping windows: each a piece of the answer, the address whole in one
        assert len(sent) > 1 and all(t in whole for t in sent) and sent[-1].endswith("today")
        assert any("bo@example.com" in t for t in sent)
    else:
        assert sent == [whole]
    entry = next(g for g in record_of(gw, resp)["guardrails"] if g["phase"] == "response")
    assert entry["action"] == "mask" and entry["matched"] == ["pii:EMAIL"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_blocked_answer_is_rejected(gw: Gateway, client: str, provider: str) -> None:
    expected = f"Response rejected by Bedrock Guardrails: {DEFAULT_BLOCKED}"
    whole = send(
        gw, client, f"bgmask-{provider}", "hi", False, reply_pieces("Let us discuss forbidden-topic now")
    )
    assert whole.status_code == 403 and error_of(client, whole)[0] == expected
    assert "forbidden" not in whole.text
    streamed = send(
        gw,
        client,
        f"bgmask-{provider}",
        "hi",
        True,
        reply_pieces("I will discuss ", "forbidden-", "topic now"),
    )
    assert streamed.status_code == 200 and stream_error(client, streamed)["message"] == expected
    assert "forbidden" not in streamed.text and "I will discuss" in answer_text(client, streamed)
    entry = next(g for g in record_of(gw, streamed)["guardrails"] if g["phase"] == "response")
    assert entry["action"] == "reject" and entry["matched"] == ["word:custom"]
