"""Every snapshot in the conformance corpus is either run by a suite or listed here with a reason.

A new fixture (or a new corpus directory) cannot go unnoticed: it fails this test until
a suite runs it or a reader-acceptable reason says why not.
"""

from __future__ import annotations

import re

from .conformance_util import corpus_dir

# Pattern (path relative to the corpus) -> the suite that runs it.
RUN_BY: list[tuple[str, str]] = [
    (r"^requests/completions/[^/]+\.(anthropic|bedrock|vertex-gemini)\.snap$", "test_conformance.py"),
    (
        r"^response/(anthropic|bedrock|vertex-gemini|completions)/[^/]+\."
        r"(messages|bedrock|vertex-gemini|completions)-completions(-streaming)?\.snap$",
        "test_conformance.py",
    ),
    (
        r"^requests/messages/[^/]+\.(anthropic|bedrock|completions|vertex)\.snap$",
        "test_conformance_messages.py",
    ),
    (
        r"^response/(anthropic|bedrock|completions)/[^/]+\.(messages|bedrock|completions)-messages(-streaming)?\.snap$",
        "test_conformance_messages.py",
    ),
    (r"^requests/embeddings/[^/]+\.snap$", "test_conformance_embeddings.py"),
    (
        r"^response/(openai|vertex|bedrock-titan|bedrock-cohere|bedrock-nova)/[^/]*embeddings[^/]*\.snap$",
        "test_conformance_embeddings.py",
    ),
]

# Pattern -> why the gateway does not translate that pair.
NOT_SUPPORTED: list[tuple[str, str]] = [
    (
        r"(^requests/responses/|^response/responses/|\.responses\.snap$|-responses(-streaming)?\.snap$)",
        "the OpenAI Responses API is not one of this gateway's client APIs (chat completions, "
        "Messages, embeddings, models); such paths pass through untranslated",
    ),
    (
        r"-detect(-streaming)?\.snap$",
        "the peer's 'detect' mode reads usage from an untranslated answer; our passthrough forwards "
        "it byte for byte and there is nothing to translate (usage accounting is a later issue)",
    ),
    (r"\.get-messages-", "prompt-text extraction for guardrails, which come with the guardrails issue"),
    (r"(^requests/count-tokens/|count_tokens)", "Anthropic's count_tokens API is not one of the client APIs"),
    (r"rerank", "the rerank API is not one of the client APIs"),
    (r"gemini-native\.snap$", "Gemini's native API as a client format is passthrough only, not translated"),
    (r"^requests/policies/", "request policies (prompt enrichment, guardrail inputs) belong to later issues"),
]


def _classify(rel: str) -> tuple[str, str] | None:
    for pattern, suite in RUN_BY:
        if re.search(pattern, rel):
            return "run", suite
    for pattern, reason in NOT_SUPPORTED:
        if re.search(pattern, rel):
            return "not supported", reason
    return None


def test_every_snapshot_is_run_or_explained() -> None:
    root = corpus_dir()
    snaps = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.snap"))
    assert snaps, f"no snapshots under {root}"
    unexplained = [s for s in snaps if _classify(s) is None]
    assert unexplained == [], "fixtures neither run nor explained: " + ", ".join(unexplained)
    run = [s for s in snaps if _classify(s) == ("run", "test_conformance.py")]
    assert len(run) >= 40  # the chat pairs are the bulk of the corpus


def test_every_reason_still_matches_a_fixture() -> None:
    """A stale entry would hide nothing but mislead readers."""
    snaps = [p.relative_to(corpus_dir()).as_posix() for p in corpus_dir().rglob("*.snap")]
    for pattern, _ in RUN_BY + NOT_SUPPORTED:
        assert any(re.search(pattern, s) for s in snaps), pattern
