"""The webhook guard through the real Envoy, against a test webhook speaking agentgateway's contract
(tests/guard_webhook.py): mask, reject and pass on requests and answers, forwarded and computed
headers, and what a timeout, an error or an unreachable webhook does with failClosed and failOpen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from extproc.ports import free_port
from tests.e2e.conftest import Gateway
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
from tests.guard_webhook import REJECT_BODY, Webhook


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def hook_config(target: str, **extra: object) -> dict:
    return {"target": {"host": target}, "timeout": "500ms", **extra}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[Gateway]:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there

    def routes(host: str, _: str) -> list[dict]:
        hook = hook_config(
            webhook.host,
            forwardHeaderMatches=[{"name": "x-tenant", "value": {"regex": "acme-.*"}}, {"name": "x-trace"}],
            headers={"x-model": "llmRequest.model", "x-path": "request.path"},
        )
        both = {"request": [{"webhook": hook}], "response": [{"webhook": {**hook, "streamBatch": 16}}]}
        return [
            route("hook-openai", "openai", host, both),
            route("hook-anthropic", "anthropic", host, both),
            route(
                "open-openai", "openai", host, {"request": [{"webhook": {**hook, "failureMode": "failOpen"}}]}
            ),
            route("down-openai", "openai", host, {"request": [{"webhook": hook_config(closed)}]}),
            route(
                "downopen-openai",
                "openai",
                host,
                {"request": [{"webhook": {**hook_config(closed), "failureMode": "failOpen"}}]},
            ),
            route(
                "path-openai",
                "openai",
                host,
                {"request": [{"webhook": hook_config(webhook.host, headers={":path": "'/v3/guard/check'"})}]},
            ),
        ]

    with guarded_gateway(tmp_path_factory.mktemp("guard-webhook"), routes, PROMPT_LOGGING) as gateway:
        yield gateway


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_webhook_mask_replaces_the_prompt(gw: Gateway, webhook: Webhook, client: str, provider: str) -> None:
    gw.mock.clear()
    resp = send(
        gw, client, f"hook-{provider}", "my email is christian@solo.io, help", headers={"x-tenant": "acme-1"}
    )
    assert resp.status_code == 200, resp.text
    seen = provider_texts(gw)
    assert "[REDACTED]" in seen and "christian@solo.io" not in seen
    call = webhook.last("/request")
    assert call["body"] == {
        "body": {"messages": [{"role": "user", "content": "my email is christian@solo.io, help"}]}
    }
    assert call["headers"]["Content-Type"] == "application/json"
    assert call["headers"]["x-tenant"] == "acme-1"  # forwardHeaderMatches
    assert call["headers"]["x-model"] and call["headers"]["x-path"].endswith(
        "/v1/" + ("messages" if client == "messages" else "chat/completions")
    )
    record = record_of(gw, resp)
    assert {"phase": "request", "guard": "webhook", "action": "mask", "reason": "pii"} in record["guardrails"]
    assert "[REDACTED]" in str(record["prompt"]) and "christian@solo.io" not in str(record)


def test_forward_header_matches_only_forward_matching_values(gw: Gateway, webhook: Webhook) -> None:
    send(gw, "chat", "hook-openai", "hello", headers={"x-tenant": "other", "x-trace": "t-1", "x-secret": "s"})
    headers = webhook.last("/request")["headers"]
    assert "x-tenant" not in headers and headers["x-trace"] == "t-1" and "x-secret" not in headers


@pytest.mark.parametrize("client", CLIENTS)
def test_webhook_reject_answers_with_its_status_and_body(gw: Gateway, client: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, "hook-anthropic", "please reject-me now")
    assert resp.status_code == 422, resp.text
    assert error_of(client, resp)[0] == REJECT_BODY
    assert gw.mock.requests() == []
    assert record_of(gw, resp)["guardrails"] == [
        {"phase": "request", "guard": "webhook", "action": "reject", "reason": "reject-me"}
    ]


def test_webhook_pass_leaves_the_request_alone(gw: Gateway) -> None:
    gw.mock.clear()
    resp = send(gw, "chat", "hook-openai", "a clean question")
    assert resp.status_code == 200
    assert "a clean question" in provider_texts(gw)
    assert record_of(gw, resp)["guardrails"][0] == {
        "phase": "request",
        "guard": "webhook",
        "action": "allow",
        "reason": "clean",
    }


def test_cel_path_header_sets_the_webhook_path(gw: Gateway, webhook: Webhook) -> None:
    send(gw, "chat", "path-openai", "hello")
    assert webhook.received[-1]["path"] == "/v3/guard/check"


@pytest.mark.parametrize(
    ("route_name", "text", "status", "action"),
    [
        ("hook-openai", "slow-please", 503, "fail_closed"),  # no answer within the timeout
        ("hook-openai", "break-me", 503, "fail_closed"),  # HTTP 500
        ("down-openai", "hello", 503, "fail_closed"),  # nothing listening
        ("open-openai", "slow-please", 200, "fail_open"),
        ("open-openai", "break-me", 200, "fail_open"),
        ("downopen-openai", "hello", 200, "fail_open"),
    ],
)
def test_failure_modes(gw: Gateway, route_name: str, text: str, status: int, action: str) -> None:
    resp = send(gw, "chat", route_name, text)
    assert resp.status_code == status, resp.text
    if status == 503:
        message, code = error_of("chat", resp)
        assert code == "guardrail_unavailable" and "webhook guardrail is unavailable" in message
    assert record_of(gw, resp)["guardrails"][0]["action"] == action
    assert metric(gw, "agentgateway_guardrail_checks_total", guard="webhook", action=action) >= 1


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_webhook_masks_the_answer(
    gw: Gateway, webhook: Webhook, client: str, provider: str, stream: bool
) -> None:
    pieces = reply_pieces("Write to ", "bo@exa", "mple.com", " today")
    resp = send(gw, client, f"hook-{provider}", "hi", stream, pieces)
    assert resp.status_code == 200, resp.text
    assert "bo@exa" not in resp.text and "mple.com" not in resp.text
    assert "[REDACTED]" in answer_text(client, resp)
    call = webhook.last("/response")
    assert (
        list(call["body"]["body"]) == ["choices"]
        and call["body"]["body"]["choices"][0]["message"]["role"] == "assistant"
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_webhook_rejects_the_answer(gw: Gateway, client: str) -> None:
    resp = send(gw, client, "hook-openai", "hi", False, reply_pieces("I will reject-me now"))
    assert resp.status_code == 422 and error_of(client, resp)[0] == REJECT_BODY
    streamed = send(gw, client, "hook-openai", "hi", True, reply_pieces("I will ", "reject-me", " now"))
    assert streamed.status_code == 200 and stream_error(client, streamed)["message"] == REJECT_BODY
    assert "reject-me" not in streamed.text


@pytest.mark.parametrize(
    "pieces",
    [("Sure, I will reje", "ct-me now."), ("Sure, I will hurt ", "them all.")],
    ids=["in-a-word", "between-words"],
)
@pytest.mark.parametrize("client", CLIENTS)
def test_webhook_sees_a_phrase_split_between_its_calls(
    gw: Gateway, webhook: Webhook, client: str, pieces: tuple[str, str]
) -> None:
    # streamBatch 16: the first delta fills a window alone. The webhook was sent pieces with
    # nothing in common, each of which passed; now each window's end is sent again with the next.
    webhook.received.clear()
    streamed = send(gw, client, "hook-openai", "hi", True, reply_pieces(*pieces))
    assert streamed.status_code == 200 and stream_error(client, streamed)["message"] == REJECT_BODY
    assert pieces[1] not in streamed.text
    calls = [c for c in webhook.received if c["path"] == "/response"]
    sent = [c["body"]["body"]["choices"][0]["message"]["content"] for c in calls]
    assert len(sent) == 2 and pieces[0] == sent[0] and "".join(pieces).endswith(sent[1])
