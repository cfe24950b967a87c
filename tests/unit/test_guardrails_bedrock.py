"""The bedrockGuardrails guard: its config, the mapping of ApplyGuardrail answers to verdicts, and
the real boto3 client against a test endpoint speaking ApplyGuardrail (tests/bedrock_guardrail_server.py):
signing, a Bedrock API key, the credential chain, AWS's errors, timeouts, and the event loop kept free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from extproc.config.guardrails import PromptGuard, Rejection
from extproc.guardrails import build
from extproc.guardrails.base import ALLOW, FAIL_CLOSED, FAIL_OPEN, MASK, REJECT, TextItem, Verdict
from extproc.guardrails.bedrock import BedrockGuard
from extproc.guardrails.bedrock_reply import InvalidReply, Unplaceable, read_reply
from extproc.guardrails.overlap import OverlapWindow
from tests.bedrock_guardrail_server import Guardrail, GuardrailServer, assess

KEY_ID, SECRET = "AKIDBEDROCKGUARD01", "bedrock-guard-secret"
API_KEY = "bedrock-api-key-123"
SEED_MESSAGE = "BLOCKED: PII detected: EMAIL"
ARN = "arn:aws:bedrock:eu-west-1:123456789012:guardrail/abc123"

# --- config --------------------------------------------------------------------------------------


def guard_config(**extra: Any) -> dict[str, Any]:
    return {"guardrailIdentifier": "gr1abc", "guardrailVersion": "1", "region": "us-east-1", **extra}


def test_config_loads_on_requests_and_answers() -> None:
    pg = PromptGuard.model_validate(
        {
            "request": [{"bedrockGuardrails": guard_config(guardrailVersion=2), "scope": ["messages"]}],
            "response": [{"bedrockGuardrails": guard_config(guardrailVersion="DRAFT")}],
        }
    )
    (req,), (resp,) = pg.request_specs(), pg.response_specs()
    assert (req.kind, req.config.guardrail_version, req.scope) == ("bedrockGuardrails", "2", ("messages",))
    assert (resp.kind, resp.config.guardrail_version) == ("bedrockGuardrails", "DRAFT")
    request_guards, response_guards = build(pg)
    assert isinstance(request_guards[0], BedrockGuard) and isinstance(response_guards[0], BedrockGuard)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"guardrailIdentifier": "Not An Id"}, "is not a guardrail id"),
        ({"guardrailVersion": "v1"}, "is not a guardrail version"),
        ({"region": "useast"}, "is not an AWS region"),
        ({"endpointUrl": "localhost:9"}, "http:// or https://"),
        ({"timeout": "soon"}, "invalid duration"),
        ({"policies": {"backendAuth": {}}}, "set one of key"),
        ({"policies": {"backendAuth": {"aws": {"accessKeyId": "a"}}}}, "secretAccessKey"),
        ({"guardrailId": "x"}, "guardrailId"),
    ],
)
def test_config_errors(extra: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        PromptGuard.model_validate({"request": [{"bedrockGuardrails": guard_config(**extra)}]})


def test_arn_identifier_is_accepted() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123"
    pg = PromptGuard.model_validate(
        {"request": [{"bedrockGuardrails": guard_config(guardrailIdentifier=arn)}]}
    )
    assert pg.request_specs()[0].config.guardrail_identifier == arn


# --- answers as verdicts -------------------------------------------------------------------------

BLOCKED_EMAIL = {
    "action": "GUARDRAIL_INTERVENED",
    "outputs": [{"text": "Sorry, the model cannot answer this question."}],
    "assessments": [
        {
            "sensitiveInformationPolicy": {
                "piiEntities": [{"match": "a@b.co", "type": "EMAIL", "action": "BLOCKED", "detected": True}],
                "regexes": [],
            }
        }
    ],
}


def test_none_passes() -> None:
    assert (
        read_reply("request", {"action": "NONE", "outputs": [], "assessments": [{}]}, 1, Rejection()).action
        == ALLOW
    )


def test_blocked_rejects_with_the_guardrails_message() -> None:
    verdict = read_reply("request", BLOCKED_EMAIL, 1, Rejection())
    assert verdict.action == REJECT and verdict.status == 403
    assert (
        verdict.message
        == "Request rejected by Bedrock Guardrails: Sorry, the model cannot answer this question."
    )
    assert verdict.reason == SEED_MESSAGE and verdict.matched == ["pii:EMAIL"]
    assert "a@b.co" not in str(verdict)  # the match itself is never kept
    answer = read_reply("response", BLOCKED_EMAIL, 1, Rejection())
    assert answer.message.startswith("Response rejected by Bedrock Guardrails: ")


def test_a_configured_rejection_keeps_its_body_status_and_headers() -> None:
    rejection = Rejection.model_validate({"status": 451, "body": "no", "headers": {"set": {"x-why": "pii"}}})
    verdict = read_reply("request", BLOCKED_EMAIL, 1, rejection)
    assert (verdict.status, verdict.message, verdict.headers) == (451, "no", {"x-why": "pii"})


def test_anonymized_masks_each_text() -> None:
    reply = assess(Guardrail(pii={"EMAIL": "ANONYMIZED"}), "INPUT", ["mail a@b.co", "and c@d.org now"])
    verdict = read_reply("request", reply, 2, Rejection())
    assert verdict.action == MASK and verdict.texts == ["mail {EMAIL}", "and {EMAIL} now"]
    assert verdict.reason == "ANONYMIZED: PII detected: EMAIL" and verdict.matched == ["pii:EMAIL"]


def test_blocked_wins_over_anonymized() -> None:
    guardrail = Guardrail(pii={"EMAIL": "ANONYMIZED", "PHONE": "BLOCKED"}, blocked_input=SEED_MESSAGE)
    verdict = read_reply("request", assess(guardrail, "INPUT", ["a@b.co (555) 123-4567"]), 1, Rejection())
    assert verdict.action == REJECT and verdict.matched == ["pii:PHONE", "pii:EMAIL"]
    assert verdict.reason == "BLOCKED: PII detected: PHONE. ANONYMIZED: PII detected: EMAIL"


def test_masked_outputs_that_do_not_line_up_are_a_reject_to_fall_back_on() -> None:
    reply = assess(Guardrail(pii={"EMAIL": "ANONYMIZED"}), "INPUT", ["a@b.co"])
    with pytest.raises(Unplaceable) as raised:
        read_reply("request", reply, 2, Rejection())
    verdict = raised.value.verdict
    assert verdict.action == REJECT and "1 outputs for 2 texts" in str(verdict.reason)
    assert verdict.message == "Request rejected by Bedrock Guardrails: ANONYMIZED: PII detected: EMAIL"


def test_every_policy_kind_is_named() -> None:
    reply = {
        "action": "GUARDRAIL_INTERVENED",
        "outputs": [{"text": "blocked"}],
        "assessments": [
            {
                "topicPolicy": {"topics": [{"name": "Finance", "type": "DENY", "action": "BLOCKED"}]},
                "contentPolicy": {
                    "filters": [{"type": "VIOLENCE", "confidence": "HIGH", "action": "BLOCKED"}]
                },
                "wordPolicy": {
                    "customWords": [{"match": "secret-word", "action": "BLOCKED"}],
                    "managedWordLists": [{"match": "x", "type": "PROFANITY", "action": "NONE"}],
                },
                "contextualGroundingPolicy": {
                    "filters": [{"type": "GROUNDING", "threshold": 0.5, "score": 0.1, "action": "BLOCKED"}]
                },
                "automatedReasoningPolicy": {"findings": [{"invalid": {"action": "BLOCKED"}}]},
            }
        ],
    }
    verdict = read_reply("response", reply, 1, Rejection())
    assert verdict.matched == [
        "topic:Finance",
        "content:VIOLENCE",
        "word:custom",
        "grounding:GROUNDING",
        "automatedReasoningPolicy",
    ]  # PROFANITY was detected with action NONE: not an intervention
    assert "secret-word" not in str(verdict)
    assert verdict.reason is not None and verdict.reason.startswith(
        "BLOCKED: Denied topic: Finance; Content policy: violence; Word policy: custom word"
    )


@pytest.mark.parametrize(
    "reply",
    [
        None,
        {"action": "MAYBE"},
        {"action": "GUARDRAIL_INTERVENED", "outputs": "x"},
        {"action": "GUARDRAIL_INTERVENED", "outputs": [{}]},
    ],
)
def test_unreadable_answers(reply: Any) -> None:
    with pytest.raises(InvalidReply):
        read_reply("request", reply, 1, Rejection())


# --- the real client against the test endpoint -----------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[GuardrailServer]:
    guardrails = {
        ("grblock", "1"): Guardrail(pii={"EMAIL": "BLOCKED"}, blocked_input=SEED_MESSAGE),
        ("grmask", "DRAFT"): Guardrail(pii={"EMAIL": "ANONYMIZED"}, words=("forbidden-topic",)),
        ("grjoined", "1"): Guardrail(pii={"EMAIL": "ANONYMIZED"}, one_output=True),
        (ARN, "2"): Guardrail(pii={"EMAIL": "BLOCKED"}),
    }
    srv = GuardrailServer(guardrails, {KEY_ID: SECRET}, bearer=API_KEY).start()
    yield srv
    srv.stop()


def make_guard(server: GuardrailServer, phase: str = "request", **extra: Any) -> BedrockGuard:
    config: dict[str, Any] = {
        "guardrailIdentifier": "grblock",
        "guardrailVersion": "1",
        "region": "eu-west-1",
        "endpointUrl": server.url,
        "timeout": "3s",
        "policies": {"backendAuth": {"aws": {"accessKeyId": KEY_ID, "secretAccessKey": SECRET}}},
        **extra,
    }
    pg = PromptGuard.model_validate({phase: [{"bedrockGuardrails": config}]})
    guards = build(pg)[0 if phase == "request" else 1]
    assert isinstance(guards[0], BedrockGuard)
    return guards[0]


def check(guard: BedrockGuard, phase: str, *texts: str) -> Verdict:
    items = [TextItem("user", "messages", t) for t in texts]
    return asyncio.run(guard.check(phase, items, None))  # type: ignore[arg-type]


def test_boto3_signs_for_bedrock_and_sends_the_wire_format(server: GuardrailServer) -> None:
    server.clear()
    verdict = check(make_guard(server), "request", "hi my email is christian@solo.io")
    assert verdict.action == REJECT
    assert verdict.message == f"Request rejected by Bedrock Guardrails: {SEED_MESSAGE}"
    call = server.received[-1]
    assert call.path == "/guardrail/grblock/version/1/apply"
    assert call.auth == f"sigv4:{KEY_ID}:eu-west-1"  # the signature matched, scoped to bedrock
    assert "/eu-west-1/bedrock/aws4_request" in call.headers["Authorization"]
    assert call.body == {
        "source": "INPUT",
        "content": [{"text": {"text": "hi my email is christian@solo.io"}}],
    }


def test_an_arn_identifier_travels_encoded_and_signed(server: GuardrailServer) -> None:
    verdict = check(make_guard(server, guardrailIdentifier=ARN, guardrailVersion=2), "request", "x a@b.co")
    assert verdict.action == REJECT, verdict
    call = server.received[-1]
    assert call.path.endswith("guardrail/abc123/version/2/apply") and call.auth.startswith("sigv4:")


def test_answers_are_checked_as_output(server: GuardrailServer) -> None:
    guard = make_guard(server, "response", guardrailIdentifier="grmask", guardrailVersion="DRAFT")
    verdict = check(guard, "response", "write to bo@example.com", "", "no address")
    assert verdict.action == MASK and verdict.texts == ["write to {EMAIL}", None, None]
    assert server.received[-1].body["source"] == "OUTPUT"
    assert len(server.received[-1].body["content"]) == 2  # the empty text is not sent


def test_masks_in_one_output_are_asked_for_again_one_text_at_a_time(server: GuardrailServer) -> None:
    guard = make_guard(server, guardrailIdentifier="grjoined")
    server.clear()
    verdict = check(guard, "request", "mail a@b.co", "clean", "or c@d.org")
    assert verdict.action == MASK and verdict.texts == ["mail {EMAIL}", None, "or {EMAIL}"]
    assert [len(c.body["content"]) for c in server.received] == [3, 1, 1, 1]
    assert verdict.matched == ["pii:EMAIL"] and verdict.reason == "ANONYMIZED: PII detected: EMAIL"
    one = check(guard, "request", "only a@b.co")  # one text: one output, no second call
    assert one.action == MASK and one.texts == ["only {EMAIL}"] and len(server.received) == 5


def test_a_bedrock_api_key_is_a_bearer_token(server: GuardrailServer) -> None:
    guard = make_guard(server, policies={"backendAuth": {"key": "$TEST_BEDROCK_GUARD_KEY"}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEST_BEDROCK_GUARD_KEY", API_KEY)
        assert check(guard, "request", "clean text").action == ALLOW
    assert server.received[-1].auth == "bearer"
    assert server.received[-1].headers["Authorization"] == f"Bearer {API_KEY}"


def test_the_credential_chain_without_policies(
    server: GuardrailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "chain-token")
    guard = make_guard(server, policies=None)
    assert check(guard, "request", "clean text").action == ALLOW
    assert server.received[-1].headers["X-Amz-Security-Token"] == "chain-token"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (
            {"policies": {"backendAuth": {"aws": {"accessKeyId": KEY_ID, "secretAccessKey": "wrong"}}}},
            "HTTP 403 InvalidSignatureException",
        ),
        ({"guardrailIdentifier": "grnone"}, "HTTP 404 ResourceNotFoundException"),
        ({"endpointUrl": "http://127.0.0.1:9"}, "EndpointConnectionError"),
        (
            {"policies": {"backendAuth": {"key": "$TEST_BEDROCK_GUARD_UNSET"}}},
            "environment variable TEST_BEDROCK_GUARD_UNSET is not set",
        ),
    ],
)
def test_failures_fail_closed_by_default(server: GuardrailServer, extra: dict[str, Any], why: str) -> None:
    verdict = check(make_guard(server, **extra), "request", "hello")
    assert verdict.action == FAIL_CLOSED and verdict.status == 503
    assert why in str(verdict.reason) and "bedrockGuardrails guardrail is unavailable" in verdict.message
    assert SECRET not in str(verdict) and "wrong" not in str(verdict.reason)


def test_server_errors_and_timeouts_fail_open_when_asked(server: GuardrailServer) -> None:
    # 1 s: room for the first call's client creation on a loaded machine; the server sleeps 2 s.
    guard = make_guard(server, failureMode="failOpen", timeout="1s")
    broken = check(guard, "request", "break-guardrail")
    assert broken.action == FAIL_OPEN and "HTTP 500 InternalServerException" in str(broken.reason)
    started = time.monotonic()
    slow = check(guard, "request", "slow-guardrail")
    assert slow.action == FAIL_OPEN and slow.reason == "no answer within 1s"
    assert time.monotonic() - started < 1.9


def test_the_event_loop_runs_while_the_guardrail_answers(server: GuardrailServer) -> None:
    guard = make_guard(server, timeout="3s")

    async def main() -> tuple[Verdict, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        verdict = await guard.check("request", [TextItem("user", "messages", "slow-guardrail")], None)  # type: ignore[arg-type]
        task.cancel()
        return verdict, ticks

    verdict, ticks = asyncio.run(main())
    assert verdict.action == ALLOW and ticks >= 20  # 2 s of answer: the loop kept ticking


def test_one_client_per_guard(server: GuardrailServer) -> None:
    guard = make_guard(server)
    check(guard, "request", "one")
    client = guard._client
    check(guard, "request", "two")
    assert client is not None and guard._client is client


def test_a_call_queued_past_its_deadline_is_not_made(server: GuardrailServer) -> None:
    guard = make_guard(server)
    server.clear()
    from extproc.guardrails.bedrock import GuardrailCallFailed

    with pytest.raises(GuardrailCallFailed, match="past its timeout"):
        guard._apply("INPUT", ["late"], time.monotonic() - 1)
    assert server.received == []


# --- streams ----------------------------------------------------------------------------------------


def test_a_stream_goes_through_the_shared_window(server: GuardrailServer) -> None:
    # Every remote kind's window (tests/unit/test_guardrails_overlap.py has the properties).
    guard = make_guard(
        server, "response", guardrailIdentifier="grmask", guardrailVersion="DRAFT", streamBatch=16
    )
    stream = guard.stream(None)  # type: ignore[arg-type]
    assert isinstance(stream, OverlapWindow) and (stream.batch, stream.overlap) == (16, 4)

    async def run(pieces: list[str]) -> str:
        out = "".join([await stream.feed(p) for p in pieces])
        return out + await stream.flush()

    server.clear()
    text = asyncio.run(run(["write to bo@exa", "mple.com today, ", "x" * 25, " end"]))
    assert text == "write to {EMAIL} today, " + "x" * 25 + " end"
    sent = [c.body["content"][0]["text"]["text"] for c in server.received]
    assert len(sent) > 1 and any("bo@example.com" in s for s in sent)
