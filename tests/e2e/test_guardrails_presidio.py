"""The presidio guard through the real Envoy, against the real Presidio engines served over their REST
API (tests/presidio_server.py): PII masked in the request before the provider sees it, in whole and
streamed answers (entities split across deltas), rejected, and what an unreachable Presidio does:
the regex fallback (logged, counted) or failClosed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
from tests.presidio_server import PresidioServer

# The blog's request (production-ready-llm-apps-blog.md "PII Redaction with Microsoft Presidio").
BLOG_ENTITIES = ["CREDIT_CARD", "US_SSN", "EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "LOCATION"]
BLOG_ANONYMIZERS = {
    "US_SSN": {"type": "replace", "new_value": "<SSN>"},
    "CREDIT_CARD": {"type": "replace", "new_value": "<CREDIT-CARD>"},
}
# entity -> (a value Presidio's recognizers find, what the blog's anonymizers make of it)
VALUES = {
    "EMAIL_ADDRESS": ("jane.roe@example.org", "<EMAIL_ADDRESS>"),
    "PHONE_NUMBER": ("(555) 123-4567", "<PHONE_NUMBER>"),
    "CREDIT_CARD": ("4111 1111 1111 1111", "<CREDIT-CARD>"),
    "US_SSN": ("536-22-8726", "<SSN>"),  # Presidio drops 123-45-6789, the blog's: a published sample
}
REJECT_BODY = "PII is not allowed here"


@pytest.fixture(scope="module")
def presidio() -> Iterator[tuple[PresidioServer, PresidioServer]]:
    analyzer, anonymizer = PresidioServer("analyzer").start(), PresidioServer("anonymizer").start()
    yield analyzer, anonymizer
    analyzer.stop()
    anonymizer.stop()


def presidio_config(analyzer: str, anonymizer: str, **extra: object) -> dict:
    return {
        "analyzerUrl": analyzer,
        "anonymizerUrl": anonymizer,
        "entities": BLOG_ENTITIES,
        "anonymizers": BLOG_ANONYMIZERS,
        "timeout": "2s",
        "streamBatch": 48,  # windows of 48 characters, the last 32 of each checked again
        "streamOverlap": 32,
        **extra,
    }


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, presidio: tuple[PresidioServer, PresidioServer]
) -> Iterator[Gateway]:
    analyzer, anonymizer = presidio[0].url, presidio[1].url
    down = f"127.0.0.1:{free_port()}"  # nothing listens there

    def routes(host: str, _: str) -> list[dict]:
        mask = presidio_config(analyzer, anonymizer)
        both = {"request": [{"presidio": mask}], "response": [{"presidio": mask}]}
        reject = presidio_config(analyzer, anonymizer, action="reject")
        rejection = {"status": 422, "body": REJECT_BODY}
        fallback = presidio_config(down, down, fallback="regex")
        closed = presidio_config(down, down)
        return [
            route("pii-openai", "openai", host, both),
            route("pii-anthropic", "anthropic", host, both),
            route(
                "deny-openai",
                "openai",
                host,
                {
                    "request": [{"presidio": reject, "rejection": rejection}],
                    "response": [{"presidio": reject, "rejection": rejection}],
                },
            ),
            # The older map shape, as the seed writes guards.
            route(
                "fallback-openai",
                "openai",
                host,
                {"request": {"presidio": fallback}, "response": {"presidio": fallback}},
            ),
            route(
                "closed-openai",
                "openai",
                host,
                {"request": [{"presidio": closed}], "response": [{"presidio": closed}]},
            ),
            route("closedresp-openai", "openai", host, {"response": [{"presidio": closed}]}),
        ]

    with guarded_gateway(tmp_path_factory.mktemp("guard-presidio"), routes, PROMPT_LOGGING) as gateway:
        yield gateway


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_pii_is_masked_before_the_provider_sees_it(
    gw: Gateway, presidio: tuple[PresidioServer, PresidioServer], client: str, provider: str
) -> None:
    gw.mock.clear()
    values = " / ".join(v for v, _ in VALUES.values())
    resp = send(gw, client, f"pii-{provider}", f"my details: {values}. help")
    assert resp.status_code == 200, resp.text
    seen = provider_texts(gw)
    tokens = " / ".join(t for _, t in VALUES.values())
    assert f"my details: {tokens}. help" in seen
    assert not any(v in seen for v, _ in VALUES.values())
    # The analyzer got the blog's request, the anonymizer its results and the blog's operators.
    analyzer, anonymizer = presidio
    asked = next(r["body"] for r in reversed(analyzer.received) if r["body"]["text"].startswith("my details"))
    assert asked == {"text": f"my details: {values}. help", "language": "en", "entities": BLOG_ENTITIES}
    anonymized = anonymizer.last()
    assert anonymized["anonymizers"] == BLOG_ANONYMIZERS and len(anonymized["analyzer_results"]) == 4
    record = record_of(gw, resp)
    decision = next(d for d in record["guardrails"] if d["phase"] == "request")
    assert decision["guard"] == "presidio" and decision["action"] == "mask"
    assert sorted(decision["matched"]) == sorted(VALUES)
    assert "<SSN>" in str(record["prompt"]) and "536-22-8726" not in str(record)


def test_a_clean_request_passes_unchanged(gw: Gateway) -> None:
    gw.mock.clear()
    resp = send(gw, "chat", "pii-openai", "what is the capital of France?")
    assert resp.status_code == 200
    assert "what is the capital of France?" in provider_texts(gw)
    assert record_of(gw, resp)["guardrails"][0] == {
        "phase": "request",
        "guard": "presidio",
        "action": "allow",
    }


@pytest.mark.parametrize("client", CLIENTS)
def test_reject_answers_with_the_guards_status_and_body(gw: Gateway, client: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, "deny-openai", "my card is 4111 1111 1111 1111")
    assert resp.status_code == 422, resp.text
    assert error_of(client, resp)[0] == REJECT_BODY
    assert gw.mock.requests() == []
    record = record_of(gw, resp)
    assert record["guardrails"] == [
        {"phase": "request", "guard": "presidio", "action": "reject", "matched": ["CREDIT_CARD"]}
    ]
    assert "4111" not in str(record)


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_pii_in_the_answer_is_masked_even_split_across_deltas(
    gw: Gateway, client: str, provider: str, stream: bool
) -> None:
    # Each value is cut between two deltas, and the deltas are shorter than the analyzed pieces.
    pieces = (
        "Write to jane.roe@exa",
        "mple.org or call (555) 12",
        "3-4567; card 4111 1111 ",
        "1111 1111. Bye",
    )
    resp = send(gw, client, f"pii-{provider}", "tell me", stream, reply_pieces(*pieces))
    assert resp.status_code == 200, resp.text
    assert (
        answer_text(client, resp)
        == "Write to <EMAIL_ADDRESS> or call <PHONE_NUMBER>; card <CREDIT-CARD>. Bye"
    )
    assert (
        "exa" not in resp.text.replace("example", "") and "4567" not in resp.text and "4111" not in resp.text
    )
    record = record_of(gw, resp)
    decision = next(d for d in record["guardrails"] if d["phase"] == "response")
    assert decision["action"] == "mask"
    assert sorted(decision["matched"]) == ["CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER"]


@pytest.mark.parametrize("client", CLIENTS)
def test_an_email_split_at_every_position_is_masked(gw: Gateway, client: str) -> None:
    before, email, after = "Reach ", "jo@ex.io", " now."
    text = before + email + after
    for cut in range(len(before), len(before) + len(email) + 1):
        resp = send(gw, client, "pii-openai", "hi", True, reply_pieces(text[:cut], text[cut:]))
        assert answer_text(client, resp) == "Reach <EMAIL_ADDRESS> now.", cut


@pytest.mark.parametrize("client", CLIENTS)
def test_a_rejected_stream_ends_with_an_error_event(gw: Gateway, client: str) -> None:
    pieces = ("Sure, here it is, nothing odd so far. ", "Your ssn is 536-22", "-8726 and more text follows.")
    resp = send(gw, client, "deny-openai", "tell me", True, reply_pieces(*pieces))
    assert resp.status_code == 200
    assert stream_error(client, resp)["message"] == REJECT_BODY
    assert "8726" not in resp.text and "more text" not in resp.text
    record = record_of(gw, resp)
    assert record["guardrails"][-1] == {
        "phase": "response",
        "guard": "presidio",
        "action": "reject",
        "matched": ["US_SSN"],
    }


# --- Presidio unreachable ------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_presidio_falls_back_to_the_regex_builtins(gw: Gateway, client: str) -> None:
    gw.mock.clear()
    before = metric(gw, "agentgateway_guardrail_fallbacks_total", phase="request", guard="presidio")
    resp = send(gw, client, "fallback-openai", "mail jane.roe@example.org, ssn 536-22-8726")
    assert resp.status_code == 200, resp.text
    # The blog's operators still decide the tokens, as Presidio would have written them.
    assert "mail <EMAIL_ADDRESS>, ssn <SSN>" in provider_texts(gw)
    record = record_of(gw, resp)
    decision = record["guardrails"][0]
    assert (
        decision["guard"] == "presidio" and decision["action"] == "mask" and decision["fallback"] == "regex"
    )
    assert decision["matched"] == ["ssn", "email"] or decision["matched"] == ["email", "ssn"]
    assert "cannot reach" in decision["reason"]
    after = metric(
        gw, "agentgateway_guardrail_fallbacks_total", phase="request", guard="presidio", fallback="regex"
    )
    assert after == before + 1
    log = (Path(gw.stack.workdir) / "extproc.log").read_text()
    assert "unavailable" in log and "the regex fallback checks the request" in log


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_fallback_masks_answers_too(gw: Gateway, stream: bool) -> None:
    pieces = ("Write to jane.roe@exa", "mple.org and card 4111 1111 ", "1111 1111.")
    resp = send(gw, "chat", "fallback-openai", "hi", stream, reply_pieces(*pieces))
    assert resp.status_code == 200, resp.text
    assert answer_text("chat", resp) == "Write to <EMAIL_ADDRESS> and card <CREDIT-CARD>."
    decision = record_of(gw, resp)["guardrails"][-1]
    assert decision["phase"] == "response" and decision["fallback"] == "regex"


@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_presidio_without_fallback_fails_closed(gw: Gateway, client: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, "closed-openai", "hello")
    assert resp.status_code == 503, resp.text
    message, _ = error_of(client, resp)
    assert "presidio guardrail is unavailable" in message
    assert gw.mock.requests() == []
    assert record_of(gw, resp)["guardrails"][0]["action"] == "fail_closed"
    streamed = send(
        gw, client, "closedresp-openai", "hello", True, reply_pieces("a long enough answer to check")
    )
    assert "presidio guardrail is unavailable" in stream_error(client, streamed)["message"]
    assert "long enough" not in streamed.text
