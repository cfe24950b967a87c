"""The presidio guard against the real Presidio engines (tests/presidio_server.py): its config, masks
and rejects, the regex fallback, and a streamed text analyzed in overlapping pieces, which for any
text and any chunking masks exactly as the whole text is masked (property-based)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from extproc.config.guardrails import PromptGuard
from extproc.guardrails import build, http
from extproc.guardrails.base import MASK, REJECT, StreamRejected, TextItem
from extproc.guardrails.overlap import cut_point
from extproc.guardrails.presidio import PresidioGuard, fallback_config
from extproc.guardrails.presidio_api import Entity
from extproc.ports import free_port
from tests.presidio_server import PresidioServer

T = TypeVar("T")
ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN"]
TEXT = "mail jane.roe@example.org, call (555) 123-4567, card 4111 1111 1111 1111, ssn 536-22-8726"
MASKED = "mail <EMAIL_ADDRESS>, call <PHONE_NUMBER>, card <CREDIT_CARD>, ssn <SSN>"


@pytest.fixture(scope="module")
def presidio() -> Iterator[tuple[str, str]]:
    analyzer, anonymizer = PresidioServer("analyzer").start(), PresidioServer("anonymizer").start()
    yield analyzer.url, anonymizer.url
    analyzer.stop()
    anonymizer.stop()


def guard(urls: tuple[str, str], phase: str = "request", **extra: Any) -> PresidioGuard:
    config = {
        "analyzerUrl": urls[0],
        "anonymizerUrl": urls[1],
        "entities": ENTITIES,
        "anonymizers": {"US_SSN": {"type": "replace", "new_value": "<SSN>"}},
        **extra,
    }
    request, response = build(PromptGuard.model_validate({phase: [{"presidio": config}]}))
    found = (request or response)[0]
    assert isinstance(found, PresidioGuard)
    return found


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` on a loop of its own, closing the loop's HTTP session after it."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await http.session().close()

    return asyncio.run(main())


def check(g: PresidioGuard, *texts: str) -> Any:
    return run(g.check("request", [TextItem("user", "messages", t) for t in texts], None))  # type: ignore[arg-type]


# --- config --------------------------------------------------------------------------------------


def test_both_shapes_load() -> None:
    presidio = {"analyzerUrl": "presidio-analyzer:3000", "anonymizerUrl": "http://presidio-anonymizer:3000"}
    listed = PromptGuard.model_validate(
        {"request": [{"presidio": presidio}], "response": [{"presidio": presidio}]}
    )
    mapped = PromptGuard.model_validate(
        {"request": {"presidio": presidio}, "response": {"presidio": presidio}}
    )
    for config in (listed, mapped):
        assert [s.kind for s in config.request_specs() + config.response_specs()] == ["presidio", "presidio"]


@pytest.mark.parametrize(
    ("presidio", "message"),
    [
        ({"analyzerUrl": "a:1"}, "action mask needs anonymizerUrl"),
        (
            {"analyzerUrl": "a:1", "action": "reject", "entities": ["PERSON"], "fallback": "regex"},
            "no builtin",
        ),
        ({"analyzerUrl": "a:1", "anonymizerUrl": "b:1", "anonymizers": {"X": {"type": "custom"}}}, "custom"),
        ({"analyzerUrl": "not a host!", "anonymizerUrl": "b:1"}, "host:port"),
    ],
)
def test_config_mistakes(presidio: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PromptGuard.model_validate({"request": [{"presidio": presidio}]})


def test_fallback_regex_masks_as_presidio_would() -> None:
    config = PromptGuard.model_validate(
        {
            "request": [
                {
                    "presidio": {
                        "analyzerUrl": "a:1",
                        "anonymizerUrl": "b:1",
                        "entities": ["US_SSN", "PERSON", "CREDIT_CARD"],
                        "anonymizers": {"US_SSN": {"type": "replace", "new_value": "<SSN>"}},
                        "fallback": "regex",
                    }
                }
            ]
        }
    ).request_specs()[0]
    stand_in = fallback_config(config.config)
    assert stand_in is not None and stand_in.verb == "mask"
    assert [(r.builtin, r.replacement) for r in stand_in.rules] == [
        ("ssn", "<SSN>"),
        ("creditCard", "<CREDIT_CARD>"),
    ]


def test_cut_point_never_splits_an_entity() -> None:
    found = [Entity("A", 2, 6, 1.0), Entity("B", 5, 9, 1.0), Entity("C", 12, 14, 1.0)]
    assert cut_point(found, 7) == 2  # inside B, which overlaps A: before both
    assert cut_point(found, 10) == 10
    assert cut_point(found, 6) == 2
    assert cut_point(found, 3, forward=True) == 9  # past the most it may hold: after both


# --- whole texts ---------------------------------------------------------------------------------


def test_mask_uses_the_anonymizers_text(presidio: tuple[str, str]) -> None:
    verdict = check(guard(presidio), TEXT, "a clean one")
    assert verdict.action == MASK and verdict.texts == [MASKED, None]
    assert verdict.matched == ENTITIES


def test_reject_names_the_entities_and_logs_placeholders(presidio: tuple[str, str]) -> None:
    verdict = check(guard(presidio, action="reject"), "write to jane.roe@example.org")
    assert verdict.action == REJECT and verdict.matched == ["EMAIL_ADDRESS"]
    assert verdict.texts == ["write to <EMAIL_ADDRESS>"]


def test_score_threshold_is_the_analyzers(presidio: tuple[str, str]) -> None:
    # The phone recognizer scores 0.4 without context words: above the threshold it is not found.
    assert check(guard(presidio, scoreThreshold=0.5), "call (555) 123-4567").action == "allow"
    assert check(guard(presidio, scoreThreshold=0.3), "call (555) 123-4567").action == MASK


def test_unreachable_presidio_falls_back_to_the_regex_builtins(presidio: tuple[str, str]) -> None:
    down = f"127.0.0.1:{free_port()}"
    verdict = check(guard((down, presidio[1]), fallback="regex"), TEXT)
    assert verdict.action == MASK and verdict.fallback == "regex" and verdict.texts == [MASKED]
    assert "cannot reach" in verdict.reason
    closed = check(guard((down, presidio[1])), TEXT)
    assert closed.action == "fail_closed" and closed.status == 503
    assert check(guard((down, presidio[1]), failureMode="failOpen"), TEXT).action == "fail_open"


# --- streams -------------------------------------------------------------------------------------

# Values Presidio finds (or, like a card number failing Luhn, does not) and words, in random order,
# separated as text separates them: the analyzer's regexes restart where its text starts, so
# values run together without a separator ("a@b.coc@d.org") may be read differently from a piece
# that starts inside them. Not by whitespace alone: the anonymizer merges two entities of one type
# with only whitespace between into one token, which two pieces cannot (a difference of form only).
FRAGMENTS = [
    "jane.roe@example.org",
    "a@b.co",
    "(555) 123-4567",
    "212-555-0100",
    "4111 1111 1111 1111",
    "4000-1234-5678-9010",  # fails Luhn
    "536-22-8726",
    "call",
    "mail me at",
    "the card is",
    "text",
]
SEPARATORS = [", ", ". ", ".\n", "; ", " - "]
texts = st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(SEPARATORS)), max_size=12).map(
    lambda parts: "".join(f + s for f, s in parts)
)


async def streamed(g: PresidioGuard, text: str, cuts: list[int]) -> str:
    f = g.stream(None)  # type: ignore[arg-type]
    out, at = [], 0
    for cut in [*sorted({c % (len(text) + 1) for c in cuts}), len(text)]:
        out.append(await f.feed(text[at:cut]))
        at = cut
    out.append(await f.flush())
    return "".join(out)


@settings(
    max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(text=texts, cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_a_stream_in_any_chunks_is_masked_as_the_whole_text(
    presidio: tuple[str, str], text: str, cuts: list[int]
) -> None:
    g = guard(presidio, "response", streamBatch=32, streamOverlap=24)
    whole = check(g, text)
    expected = whole.texts[0] if whole.texts and whole.texts[0] is not None else text
    assert run(streamed(g, text, cuts)) == expected


def test_a_stream_reject_stops_at_the_entity(presidio: tuple[str, str]) -> None:
    g = guard(presidio, "response", action="reject", streamBatch=32, streamOverlap=24)
    with pytest.raises(StreamRejected) as rejected:
        run(streamed(g, "hello there, write to jane.roe@exa" + "mple.org soon", [20, 34]))
    assert rejected.value.verdict.matched == ["EMAIL_ADDRESS"]


def test_a_stream_falls_back_when_presidio_is_down(presidio: tuple[str, str]) -> None:
    g = guard((f"127.0.0.1:{free_port()}", presidio[1]), "response", fallback="regex", streamBatch=16)
    f = g.stream(None)  # type: ignore[arg-type]

    async def go() -> str:
        return "".join([await f.feed(TEXT[:30]), await f.feed(TEXT[30:]), await f.flush()])

    assert run(go()) == MASKED
    assert f.verdict.action == MASK and f.verdict.fallback == "regex"


def test_the_readme_example_loads() -> None:
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Presidio\n", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    config = PromptGuard.model_validate(yaml.safe_load(block.group(1))["promptGuard"])
    request, response = build(config)
    assert isinstance(request[0], PresidioGuard) and request[0].fallback is not None
    assert isinstance(response[0], PresidioGuard) and response[0].reject
