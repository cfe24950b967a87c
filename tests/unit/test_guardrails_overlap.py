"""Every remote guard's stream window (extproc/guardrails/overlap.py), against each kind's real client
and test service: webhook (tests/guard_webhook.py), googleModelArmor (tests/model_armor_server.py),
bedrockGuardrails (tests/bedrock_guardrail_server.py) and presidio (the real engines,
tests/presidio_server.py).

- For random texts and random chunkings, the streamed answer is masked exactly as the whole text is
  (property-based, every kind).
- A finding split between two windows (a phrase a service rejects, an address it masks) is seen
  whole with the overlap, and missed without it (``streamOverlap: 0``): the overlap is what
  catches it, for every kind.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.config.guardrails import PromptGuard
from extproc.guardrails import build, http
from extproc.guardrails.base import Guard, StreamRejected, TextItem
from extproc.guardrails.overlap import OverlapWindow
from tests.bedrock_guardrail_server import Guardrail, GuardrailServer
from tests.guard_webhook import Webhook
from tests.model_armor_server import LOCATION, PROJECT, ModelArmorServer
from tests.presidio_server import PresidioServer

T = TypeVar("T")
KINDS = ["webhook", "googleModelArmor", "bedrockGuardrails", "presidio"]
KEY_ID, SECRET = "AKIDOVERLAPTEST01", "overlap-secret"
MASKS = {
    "webhook": "[REDACTED]",
    "googleModelArmor": "[EMAIL_ADDRESS]",
    "bedrockGuardrails": "{EMAIL}",
    "presidio": "<EMAIL_ADDRESS>",
}


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, Any]]:
    webhook = Webhook().start()
    armor = ModelArmorServer().start()
    bedrock = GuardrailServer(
        guardrails={("grwin", "1"): Guardrail(pii={"EMAIL": "ANONYMIZED"}, words=("hurt them",))},
        keys={KEY_ID: SECRET},
    ).start()
    analyzer, anonymizer = PresidioServer("analyzer").start(), PresidioServer("anonymizer").start()
    yield {
        "webhook": {"target": {"host": webhook.host}, "timeout": "2s"},
        "googleModelArmor": {
            "projectId": PROJECT,
            "location": LOCATION,
            "templateId": "deidentify",
            "endpoint": armor.endpoint,
            "timeout": "2s",
        },
        "bedrockGuardrails": {
            "guardrailIdentifier": "grwin",
            "guardrailVersion": "1",
            "region": "us-east-1",
            "endpointUrl": bedrock.url,
            "timeout": "2s",
            "policies": {"backendAuth": {"aws": {"accessKeyId": KEY_ID, "secretAccessKey": SECRET}}},
        },
        "presidio": {
            "analyzerUrl": analyzer.url,
            "anonymizerUrl": anonymizer.url,
            "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"],
            "timeout": "2s",
        },
    }
    for server in (webhook, armor, bedrock, analyzer, anonymizer):
        server.stop()


def guard_of(services: dict[str, Any], kind: str, **window: int) -> Guard:
    config = {**services[kind], **window}
    (guard,) = build(PromptGuard.model_validate({"response": [{kind: config}]}))[1]
    return guard


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` on a loop of its own, closing the loop's HTTP session after it."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await http.session().close()

    return asyncio.run(main())


async def streamed(guard: Guard, pieces: list[str]) -> str:
    window = guard.stream(None)  # type: ignore[arg-type]
    assert isinstance(window, OverlapWindow)  # the one window, whichever kind
    out = [await window.feed(p) for p in pieces]
    return "".join(out) + await window.flush()


async def whole(guard: Guard, text: str) -> str:
    items = [TextItem("assistant", "messages", text)]
    verdict = await guard.check("response", items, None)  # type: ignore[arg-type]
    assert not verdict.blocks, verdict
    return verdict.texts[0] if verdict.texts and verdict.texts[0] is not None else text


# --- any chunking: masked as the whole text ------------------------------------------------------

# Words and addresses, separated as text separates them: not by nothing (the services' patterns
# restart where a window starts, so addresses run together may be read differently), and not by
# whitespace alone (Presidio's anonymizer writes two addresses with only a space between as one
# token in a whole text, and cannot across windows: a difference of form only).
WORDS = st.sampled_from(
    ["hello", "to", "a.b", "jane.roe@example.org", "x@y.io", "write", "@", ".", "al@mail.example.org"]
)
SEPARATORS = st.sampled_from([", ", ". ", ".\n", "; ", " - "])
texts = st.lists(st.tuples(WORDS, SEPARATORS), min_size=1, max_size=24).map(
    lambda parts: "".join(w + s for w, s in parts).strip() or "hello"
)


def chunks(text: str, cuts: list[int]) -> list[str]:
    at = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *at], [*at, len(text)], strict=True) if a < b]


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_in_any_chunks_is_masked_as_the_whole_text(services: dict[str, Any], kind: str) -> None:
    guard = guard_of(services, kind, streamBatch=32, streamOverlap=24)

    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(text=texts, cuts=st.lists(st.integers(0, 10_000), max_size=10))
    def prop(text: str, cuts: list[int]) -> None:
        expected = run(whole(guard, text))
        assert run(streamed(guard, chunks(text, cuts))) == expected
        assert not re.search(r"\w@\w", expected)  # every address masked (the claim is not empty)

    prop()


# --- a finding split between two windows -----------------------------------------------------------

LEAD = "Sure, I can do that right away: "  # 32 characters: the first window's end
# Deltas that cut a finding at a space, at the end of the first window of 32 characters: the
# phrase the kind's test service rejects, or (Presidio, which masks) a phone number.
SPLIT = {
    "webhook": [LEAD + "hurt ", "them all of it."],
    "googleModelArmor": [LEAD + "hurt ", "them all of it."],
    "bedrockGuardrails": [LEAD + "hurt ", "them all of it."],
    "presidio": [LEAD + "call (555) ", "123-4567, thanks."],
}
CAUGHT = {"presidio": LEAD + "call <PHONE_NUMBER>, thanks."}


def outcome(guard: Guard, pieces: list[str]) -> str:
    try:
        return run(streamed(guard, pieces))
    except StreamRejected:
        return "rejected"


@pytest.mark.parametrize("kind", KINDS)
def test_a_finding_split_between_windows_is_seen_whole(services: dict[str, Any], kind: str) -> None:
    pieces = SPLIT[kind]
    caught = outcome(guard_of(services, kind, streamBatch=32, streamOverlap=16), pieces)
    assert caught == CAUGHT.get(kind, "rejected")
    # The same deltas without the overlap: each call sees half of it, and it goes through.
    missed = outcome(guard_of(services, kind, streamBatch=32, streamOverlap=0), pieces)
    assert missed == "".join(pieces)


def test_the_webhook_sees_a_phrase_split_between_its_calls(services: dict[str, Any]) -> None:
    # The webhook guard sent its stream in pieces with nothing in common: "...hurt " | "them" passed.
    guard = guard_of(services, "webhook", streamBatch=32)  # streamOverlap unset: a quarter, 8
    with pytest.raises(StreamRejected) as rejected:
        run(streamed(guard, SPLIT["webhook"]))
    assert rejected.value.verdict.message == "rejected by the test webhook"


# --- what a masked window lets go ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_no_original_text_of_a_finding_leaves_early(services: dict[str, Any], kind: str) -> None:
    """Each delta's output, as the client gets it: never a part of the address, at any cut."""
    text = LEAD + "write to jane.roe@example.org today, or later."
    guard = guard_of(services, kind, streamBatch=32, streamOverlap=24)
    address = "jane.roe@example.org"
    for cut in range(len(LEAD), len(LEAD) + len("write to ") + len(address) + 1):
        out = run(streamed(guard, [text[:cut], text[cut:]]))
        assert out == text.replace(address, MASKS[kind]), cut
        assert not any(address[i : i + 4] in out for i in range(len(address) - 3)), cut


def test_the_window_reads_streambatch_and_streamoverlap(services: dict[str, Any]) -> None:
    for kind in KINDS:
        window = guard_of(services, kind, streamBatch=100).stream(None)  # type: ignore[arg-type]
        assert isinstance(window, OverlapWindow)
        assert (window.batch, window.overlap) == (100, 25), kind  # unset: a quarter of the batch
        set_guard = guard_of(services, kind, streamBatch=100, streamOverlap=40)
        explicit = set_guard.stream(None)  # type: ignore[arg-type]
        assert isinstance(explicit, OverlapWindow) and explicit.overlap == 40


def test_the_readmes_streams_example_loads() -> None:
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n### Streams\n", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    (guard,) = build(PromptGuard.model_validate(yaml.safe_load(block.group(1))["promptGuard"]))[1]
    window = guard.stream(None)  # type: ignore[arg-type]
    assert isinstance(window, OverlapWindow) and (window.batch, window.overlap) == (512, 128)
