"""Upstream streams with fields of the wrong shape must still end well-formed, never raise."""

from __future__ import annotations

import json
import random
from types import ModuleType
from typing import Any

import pytest

from extproc.translate import anthropic, bedrock, gemini
from extproc.translate.base import TranslationError

from .conformance_util import corpus_dir, sse_events
from .test_translate_bedrock import _event as bedrock_event
from .wrong_types import mutate


def _sse_events(path: str) -> list[dict[str, Any]]:
    text = (corpus_dir() / path).read_text()
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def _check_well_formed(out: bytes) -> None:
    events = sse_events(out.decode())
    assert events, "a stream must at least end with [DONE]"
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    for data in events[:-1]:
        json.loads(data)


def _anthropic_data(rng: random.Random) -> bytes:
    events = _sse_events("response/anthropic/stream_thinking.json") + _sse_events(
        "response/anthropic/stream_tool.json"
    )
    return b"".join(b"data: " + json.dumps(mutate(e, rng)).encode() + b"\n\n" for e in events)


def _gemini_data(rng: random.Random) -> bytes:
    event = {
        "responseId": "r",
        "candidates": [
            {
                "index": 0,
                "content": {
                    "parts": [{"text": "a", "thought": True}, {"functionCall": {"name": "f", "args": {}}}]
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2},
    }
    return b"data: " + json.dumps(mutate(event, rng)).encode() + b"\n\n"


def _bedrock_data(rng: random.Random) -> bytes:
    events = [
        ("messageStart", {"role": "assistant"}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{}"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"text": "r"}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2}}),
    ]
    return b"".join(bedrock_event(kind, mutate(payload, rng)) for kind, payload in events)


@pytest.mark.parametrize(
    ("module", "make"),
    [(anthropic, _anthropic_data), (gemini, _gemini_data), (bedrock, _bedrock_data)],
    ids=["anthropic", "gemini", "bedrock"],
)
def test_wrongly_typed_fields_never_raise(module: ModuleType, make: Any) -> None:
    rng = random.Random(module.__name__)
    for _ in range(300):
        stream = module.ChatStream("m", include_usage=rng.random() < 0.5)
        out = stream.feed(make(rng)) + stream.finish()
        _check_well_formed(out)
        usage = stream.usage
        assert usage is None or all(isinstance(n, int) and n >= 0 for n in usage.as_dict().values())


@pytest.mark.parametrize("module", [anthropic, gemini, bedrock], ids=["anthropic", "gemini", "bedrock"])
def test_random_bytes_end_well_formed(module: ModuleType) -> None:
    rng = random.Random(7)
    for _ in range(200):
        stream = module.ChatStream("m", include_usage=True)
        _check_well_formed(stream.feed(rng.randbytes(rng.randrange(300))) + stream.finish())


@pytest.mark.parametrize(
    "req",
    [
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": "not-an-object"}}],
        },
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "$defs": ["x"]}},
                }
            ],
        },
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": 7}},
        },
    ],
    ids=["parameters-not-object", "defs-not-object", "response-schema-not-object"],
)
def test_malformed_schema_is_a_translation_error_for_gemini(req: dict) -> None:
    with pytest.raises(TranslationError):
        gemini.chat_request(req, "gemini-2.5-flash")


@pytest.mark.parametrize("module", [anthropic, gemini, bedrock], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_non_string_text_part_is_a_translation_error(module: Any) -> None:
    req = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": 5}]},
            {"role": "user", "content": "x"},
        ]
    }
    with pytest.raises(TranslationError):
        module.chat_request(req, "m")
