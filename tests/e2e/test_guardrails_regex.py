"""The regex guard through the real Envoy: every builtin masked and rejected, on requests and on
answers, whole and streamed, from chat completions and Messages clients, on providers that speak
the client's format and on translated ones; matches split across stream chunks at every position.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, Gateway
from tests.e2e.guardrail_helpers import (
    BUILTIN_RULES,
    CLIENTS,
    PROMPT_LOGGING,
    PROVIDERS,
    SAMPLES,
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

CUSTOM = [
    {"pattern": "sk-[a-z0-9]{8,}", "name": "API_KEY"},
    {"pattern": "(?i)project atlas", "name": "CODENAME"},
]
MASK = {
    "request": [{"regex": {"rules": BUILTIN_RULES + CUSTOM}}],
    "response": [{"regex": {"rules": BUILTIN_RULES + CUSTOM}}],
}
REJECTION = {
    "status": 403,
    "body": "blocked: sensitive content",
    "headers": {"set": {"x-guardrail": "blocked"}},
}
REJECT = {
    "request": [{"regex": {"action": "reject", "rules": BUILTIN_RULES}, "rejection": REJECTION}],
    "response": [{"regex": {"action": "reject", "rules": BUILTIN_RULES}, "rejection": REJECTION}],
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    def routes(host: str, _: str) -> list[dict]:
        out = [route(f"mask-{p}", p, host, MASK) for p in PROVIDERS]
        out += [route(f"reject-{p}", p, host, REJECT) for p in PROVIDERS]
        return out

    with guarded_gateway(tmp_path_factory.mktemp("guard-regex"), routes, PROMPT_LOGGING) as gateway:
        yield gateway


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("builtin", list(SAMPLES))
def test_each_builtin_is_masked_before_the_provider(
    gw: Gateway, builtin: str, client: str, provider: str, stream: bool
) -> None:
    value, token = SAMPLES[builtin]
    gw.mock.clear()
    resp = send(gw, client, f"mask-{provider}", f"my value is {value} thanks", stream)
    assert resp.status_code == 200, resp.text
    seen = provider_texts(gw)
    assert token in seen and value not in seen
    assert f"my value is {token} thanks" in answer_text(client, resp)  # the mock echoes what it got
    record = record_of(gw, resp)
    assert {"phase": "request", "guard": "regex", "action": "mask", "matched": [builtin]} in record[
        "guardrails"
    ]
    assert value not in str(record) and token in str(record["prompt"])  # the logged prompt is redacted


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("builtin", list(SAMPLES))
def test_each_builtin_is_rejected_in_the_clients_error_shape(
    gw: Gateway, builtin: str, client: str, provider: str, stream: bool
) -> None:
    value, _ = SAMPLES[builtin]
    gw.mock.clear()
    resp = send(gw, client, f"reject-{provider}", f"here: {value}", stream)
    assert resp.status_code == 403, resp.text
    message, code = error_of(client, resp)
    assert message == "blocked: sensitive content"
    assert code == ("permission_error" if client == "messages" else "guardrail_rejected")
    assert resp.headers["x-guardrail"] == "blocked"
    assert gw.mock.requests() == []  # it never reached the provider
    record = record_of(gw, resp)
    assert record["guardrails"] == [
        {"phase": "request", "guard": "regex", "action": "reject", "matched": [builtin]}
    ]
    assert record["http_status_code"] == 403 and value not in str(record)


def test_custom_patterns_mask_with_their_names(gw: Gateway) -> None:
    gw.mock.clear()
    resp = send(gw, "chat", "mask-openai", "key sk-abc12345xyz for Project ATLAS")
    assert "key <API_KEY> for <CODENAME>" in answer_text("chat", resp)
    assert "sk-abc12345xyz" not in provider_texts(gw)


def test_clean_requests_pass_unchanged(gw: Gateway) -> None:
    gw.mock.clear()
    resp = send(gw, "chat", "reject-openai", "order number 4000-1234-5678-9010, nothing secret")
    assert resp.status_code == 200  # not a card: it fails the Luhn check
    assert "4000-1234-5678-9010" in provider_texts(gw)
    assert record_of(gw, resp)["guardrails"][0]["action"] == "allow"


def test_sdk_clients_see_the_rejection_as_their_own_error(gw: Gateway) -> None:
    oa = openai.OpenAI(base_url=f"{gw.url}/reject-anthropic/v1", api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        oa.chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "ssn 123-45-6789"}]
        )
    assert err.value.code == "guardrail_rejected"
    an = anthropic.Anthropic(base_url=f"{gw.url}/reject-openai", api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as aerr:
        an.messages.create(model="gpt-4o", max_tokens=32, messages=[{"role": "user", "content": "a@b.co"}])
    assert "blocked: sensitive content" in str(aerr.value)


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("builtin", list(SAMPLES))
def test_each_builtin_is_masked_in_the_answer(
    gw: Gateway, builtin: str, client: str, provider: str, stream: bool
) -> None:
    value, token = SAMPLES[builtin]
    resp = send(gw, client, f"mask-{provider}", "tell me", stream, reply_pieces("Yours is ", value, " ok."))
    assert resp.status_code == 200, resp.text
    assert answer_text(client, resp) == f"Yours is {token} ok."
    assert value not in resp.text
    record = record_of(gw, resp)
    assert {"phase": "response", "guard": "regex", "action": "mask", "matched": [builtin]} in record[
        "guardrails"
    ]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "bedrock"])
@pytest.mark.parametrize("client", CLIENTS)
def test_an_answer_with_a_match_is_rejected_whole(gw: Gateway, client: str, provider: str) -> None:
    resp = send(gw, client, f"reject-{provider}", "tell me", False, reply_pieces("call (555) 123-4567"))
    assert resp.status_code == 403, resp.text
    assert error_of(client, resp)[0] == "blocked: sensitive content"
    assert "123-4567" not in resp.text
    record = record_of(gw, resp)
    assert record["guardrails"][-1] == {
        "phase": "response",
        "guard": "regex",
        "action": "reject",
        "matched": ["phoneNumber"],
    }
    assert record["output_tokens"]  # the answer was paid for: its usage is still counted


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "bedrock"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_streamed_answer_with_a_match_ends_with_an_error_event(
    gw: Gateway, client: str, provider: str
) -> None:
    pieces = ("Sure. ", "Your card is 4111 1111 ", "1111 1111", " and more text follows.")
    resp = send(gw, client, f"reject-{provider}", "tell me", True, reply_pieces(*pieces))
    assert resp.status_code == 200  # the status went with the first bytes
    error = stream_error(client, resp)
    assert error["message"] == "blocked: sensitive content"
    assert "4111" not in resp.text and "more text" not in resp.text
    assert answer_text(client, resp) == "Sure. Your card is "
    record = record_of(gw, resp)
    assert record["guardrails"][-1]["action"] == "reject" and "ended the stream" in record["error"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_sdks_read_the_stream_error_event(gw: Gateway, client: str, provider: str) -> None:
    pieces = ("Reach ", "me@exa", "mple.com", " soon")
    if client == "chat":
        oa = openai.OpenAI(base_url=f"{gw.url}/reject-{provider}/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.APIError, match="blocked: sensitive content"):
            for _ in oa.chat.completions.create(
                model=PROVIDERS[provider][2],
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers=reply_pieces(*pieces),
            ):
                pass
    else:
        an = anthropic.Anthropic(base_url=f"{gw.url}/reject-{provider}", api_key=CLIENT_KEY, max_retries=0)
        with (
            pytest.raises(anthropic.APIStatusError, match="blocked: sensitive content"),
            an.messages.stream(
                model=PROVIDERS[provider][2],
                max_tokens=32,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers=reply_pieces(*pieces),
            ) as s,
        ):
            for _ in s:
                pass


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("client", CLIENTS)
def test_an_email_split_at_every_position_of_a_chunk_boundary_is_masked(
    gw: Gateway, client: str, provider: str
) -> None:
    before, email, after = "Reach ", "jo@ex.io", " now."
    text = before + email + after
    for cut in range(len(before), len(before) + len(email) + 1):
        resp = send(gw, client, f"mask-{provider}", "hi", True, reply_pieces(text[:cut], text[cut:]))
        assert resp.status_code == 200, resp.text
        assert answer_text(client, resp) == "Reach <EMAIL_ADDRESS> now.", cut
        assert "jo@" not in resp.text and "ex.io" not in resp.text, cut


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_gzip_encoded_answer_is_decoded_and_masked(gw: Gateway, stream: bool) -> None:
    headers = {**reply_pieces("mail ", "a@b.co"), "x-mock-gzip": "1"}
    resp = send(gw, "chat", "mask-openai", "hi", stream, headers)
    assert resp.status_code == 200 and "content-encoding" not in resp.headers
    assert answer_text("chat", resp) == "mail <EMAIL_ADDRESS>"


def test_decisions_are_counted_in_the_metric(gw: Gateway) -> None:
    before = metric(
        gw, "agentgateway_guardrail_checks_total", phase="request", guard="regex", action="reject"
    )
    send(gw, "chat", "reject-openai", "ssn 123-45-6789")
    after = metric(gw, "agentgateway_guardrail_checks_total", phase="request", guard="regex", action="reject")
    assert after == before + 1
    assert metric(gw, "agentgateway_guardrail_checks_total", phase="response", action="mask") > 0
