"""Usage on every path: provider bodies, every stream translator and observer, split anywhere.

Fixtures are the conformance corpus (real provider answers) and the mock provider's
builders (the shapes our e2e tests serve), so each count below was written by a provider.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from extproc.mock import formats
from extproc.mock.conversation import Reply, ToolCall
from extproc.translate import anthropic, bedrock, gemini, openai
from extproc.translate.messages import codec
from extproc.translate.usage import (
    FORMATS,
    Observed,
    Usage,
    from_anthropic,
    from_bedrock_headers,
    from_openai,
    native_format,
    usage_of,
)

from .conformance_util import corpus, every_byte, feed
from .test_translate_bedrock import _event as bedrock_event
from .wrong_types import mutate


def _corpus_json(path: str) -> Any:
    return json.loads((corpus() / "response" / path).read_text())


# ---------------------------------------------------------------- the Usage type


def test_usage_semantics() -> None:
    u = Usage(input_tokens=10, output_tokens=5, cache_read_tokens=3, cache_write_tokens=2, reasoning_tokens=1)
    assert u.total_tokens == 15  # cache and reasoning are parts of input and output, not extra
    assert u.as_dict() == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 3,
        "cache_write_tokens": 2,
        "reasoning_tokens": 1,
        "total_tokens": 15,
    }
    assert u.anthropic() == {
        "input_tokens": 5,  # Anthropic's input_tokens leave the cache out
        "output_tokens": 5,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
    }
    assert from_anthropic(u.anthropic()) == Usage(10, 5, 3, 2)  # reasoning: Anthropic has no field
    assert from_openai(u.openai()) == u
    with pytest.raises(AttributeError):
        u.input_tokens = 1  # type: ignore[misc]


# ---------------------------------------------------------------- non-streamed bodies

BODIES: list[tuple[str, str, Usage | None, str | None]] = [
    # (format, corpus file, usage, response model)
    ("openai", "completions/basic.json", Usage(17, 23), "gpt-3.5-turbo-0125"),
    ("openai", "completions/cache_write.json", Usage(1000, 10, 300, 200), "gpt-5.6"),
    # Gemini's OpenAI-compatible endpoint: thinking is in total_tokens only (7 + 12 of 402).
    ("openai", "completions/gemini_with_completion_tokens.json", Usage(7, 395), "gemini-2.5-flash"),
    ("openai", "completions/openrouter_reasoning.json", Usage(23, 796), "test"),
    # Anthropic: input_tokens 15 leave out 12 read from and 13 written to the cache.
    ("anthropic", "anthropic/basic.json", Usage(40, 21, 12, 13), "claude-haiku-4-5-20251001"),
    ("anthropic", "anthropic/thinking.json", Usage(50, 251, 2, 1), "claude-opus-4-6"),
    ("gemini", "vertex-gemini/basic.json", Usage(8, 6), "gemini-2.5-pro"),
    # Thoughts are apart from candidates in Gemini's counts; output includes them.
    ("gemini", "vertex-gemini/reasoning.json", Usage(10, 17, reasoning_tokens=5), "gemini-2.5-pro"),
    ("bedrock", "bedrock/basic.json", Usage(18, 46), None),  # Converse names no model
    ("bedrock", "bedrock/cache_write.json", Usage(2403, 9, 0, 2387), None),
    ("openai-embeddings", "openai/embeddings.json", Usage(8), "text-embedding-3-small"),
    ("openai-embeddings", "openai/gemini-embeddings.json", None, "gemini-embedding-001"),  # no usage sent
    ("vertex-embeddings", "vertex/embeddings.json", Usage(9), None),  # 4 + 5, per instance
    ("bedrock-titan-embeddings", "bedrock-titan/embeddings.json", Usage(3), None),
    ("bedrock-cohere-embeddings", "bedrock-cohere/embeddings.json", None, None),  # body has no counts
    ("bedrock-nova-embeddings", "bedrock-nova/embeddings.json", None, None),  # body has no counts
]


@pytest.mark.parametrize(("fmt", "path", "usage", "model"), BODIES, ids=[f"{f}:{p}" for f, p, _, _ in BODIES])
def test_usage_of_provider_bodies(fmt: str, path: str, usage: Usage | None, model: str | None) -> None:
    assert usage_of(fmt, _corpus_json(path)) == (usage, model)


def test_every_format_has_a_fixture() -> None:
    assert {fmt for fmt, *_ in BODIES} | {"gemini-embeddings"} == FORMATS


MOCK_BODIES: list[tuple[str, Callable[[], bytes], Usage | None]] = [
    ("gemini-embeddings", lambda: formats.gemini_embeddings([[0.1, 0.2]]), None),  # no counts today
    ("vertex-embeddings", lambda: formats.vertex_text_embeddings(["a b", "c"], [[0.1], [0.2]]), Usage(3)),
    ("vertex-embeddings", lambda: formats.vertex_multimodal_embeddings([[0.1]]), None),
    ("bedrock-titan-embeddings", lambda: formats.titan_embedding("a b c d", [0.1], None), Usage(4)),
    (
        "bedrock-cohere-embeddings",
        lambda: formats.cohere_embeddings("id", ["a"], [[0.1]], None),
        None,
    ),
    ("bedrock-nova-embeddings", lambda: formats.nova_embeddings("TEXT", [0.1]), None),
]


@pytest.mark.parametrize(("fmt", "make", "usage"), MOCK_BODIES, ids=[m[0] for m in MOCK_BODIES])
def test_usage_of_mock_embeddings(fmt: str, make: Callable[[], bytes], usage: Usage | None) -> None:
    assert usage_of(fmt, json.loads(make()))[0] == usage


def test_cohere_billed_units_when_present() -> None:
    body = {"embeddings": [[0.1]], "meta": {"billed_units": {"input_tokens": 6}}}
    assert usage_of("bedrock-cohere-embeddings", body) == (Usage(6), None)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_usage_of_never_raises(fmt: str) -> None:
    samples = [path for f, path, *_ in BODIES if f == fmt] or ["openai/embeddings.json"]
    rng = random.Random(fmt)
    for _ in range(300):
        body = mutate(_corpus_json(rng.choice(samples)), rng)
        usage, model = usage_of(fmt, body)
        assert usage is None or all(isinstance(n, int) and n >= 0 for n in usage.as_dict().values())
        assert model is None or isinstance(model, str)
    for odd in (None, [], "x", 3, {}):
        assert usage_of(fmt, odd)[0] is None


def test_wrongly_typed_counts_count_as_zero() -> None:
    body = {"usage": {"input_tokens": "12", "output_tokens": True, "cache_read_input_tokens": -3}}
    assert usage_of("anthropic", body) == (Usage(), None)


def test_unknown_format_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="unknown usage format"):
        usage_of("cohere", {})


@pytest.mark.parametrize(
    ("kind", "api", "model", "fmt"),
    [
        ("openai", "completions", "gpt-4o", "openai"),
        ("azure", "messages", "gpt-4o", "openai"),
        ("anthropic", "messages", "claude-x", "anthropic"),
        ("vertex", "completions", "claude-sonnet-4", "anthropic"),
        ("vertex", "completions", "gemini-2.5-pro", "gemini"),
        ("vertex", "messages", "meta/llama-4-maas", "openai"),
        ("gemini", "messages", "gemini-2.5-flash", "gemini"),
        ("bedrock", "completions", "anthropic.claude-x", "bedrock"),
        ("openai", "embeddings", "text-embedding-3-small", "openai-embeddings"),
        ("azure", "embeddings", "e", "openai-embeddings"),
        ("gemini", "embeddings", "gemini-embedding-001", "gemini-embeddings"),
        ("vertex", "embeddings", "text-embedding-005", "vertex-embeddings"),
        ("bedrock", "embeddings", "amazon.titan-embed-text-v2:0", "bedrock-titan-embeddings"),
        ("bedrock", "embeddings", "cohere.embed-v4:0", "bedrock-cohere-embeddings"),
        ("bedrock", "embeddings", "amazon.nova-2-multimodal-embeddings-v1:0", "bedrock-nova-embeddings"),
    ],
)
def test_native_format(kind: str, api: str, model: str, fmt: str) -> None:
    assert native_format(kind, api, model) == fmt
    assert fmt in FORMATS


def test_bedrock_headers() -> None:
    headers = {"X-Amzn-Bedrock-Input-Token-Count": "12", "x-amzn-bedrock-output-token-count": "3"}
    assert from_bedrock_headers(headers) == Usage(12, 3)
    assert from_bedrock_headers({"x-amzn-bedrock-input-token-count": "nan"}) == Usage()
    assert from_bedrock_headers({"content-type": "application/json"}) is None


# ---------------------------------------------------------------- streams: every translator and observer

REPLY = Reply(id="r1", text="one two three four five six seven", tool_calls=[], stop="stop", **{
    "input_tokens": 11, "output_tokens": 7,
})  # fmt: skip
TOOL_REPLY = Reply(
    id="r2",
    text="",
    tool_calls=[ToolCall("t1", "f", {"a": 1}, '{"a":1}'), ToolCall("t2", "g", {}, "{}")],
    stop="tool",
    input_tokens=20,
    output_tokens=9,
)
MODEL = "provider-model-v1"


def _native(provider: str, reply: Reply) -> bytes:
    """The provider's stream for ``reply``, as the mock provider serves it."""
    if provider == "openai":
        return b"".join(formats.openai_stream(reply, MODEL, include_usage=True)) + formats.OPENAI_DONE
    if provider == "anthropic":
        return b"".join(formats.anthropic_stream(reply, MODEL))
    if provider == "gemini":
        return b"".join(formats.gemini_sse(p) for p in formats.gemini_stream_payloads(reply, MODEL))
    return b"".join(formats.bedrock_stream(reply))


# (name, provider stream, factory, the model the stream reports)
STREAMS: list[tuple[str, str, Callable[[], Any], str | None]] = [
    ("chat/openai", "openai", lambda: openai.ChatStream("m", include_usage=True), MODEL),
    ("chat/openai-unasked", "openai", lambda: openai.ChatStream("m", include_usage=False), MODEL),
    ("chat/anthropic", "anthropic", lambda: anthropic.ChatStream("m", include_usage=False), MODEL),
    ("chat/gemini", "gemini", lambda: gemini.ChatStream("m", include_usage=False), MODEL),
    ("chat/bedrock", "bedrock", lambda: bedrock.ChatStream("m", include_usage=False), None),
    ("messages/anthropic", "anthropic", lambda: codec("anthropic", "m").stream("m"), MODEL),
    ("messages/vertex-claude", "anthropic", lambda: codec("vertex", "claude-x").stream("m"), MODEL),
    ("messages/openai", "openai", lambda: codec("openai", "m").stream("m"), MODEL),
    ("messages/azure", "openai", lambda: codec("azure", "m").stream("m"), MODEL),
    ("messages/gemini", "gemini", lambda: codec("gemini", "m").stream("m"), MODEL),
    ("messages/vertex-gemini", "gemini", lambda: codec("vertex", "gemini-x").stream("m"), MODEL),
    ("messages/bedrock", "bedrock", lambda: codec("bedrock", "m").stream("m"), None),
    ("observe/anthropic", "anthropic", lambda: anthropic.AnthropicStreamObserver(), MODEL),
    ("observe/gemini", "gemini", lambda: Observed(gemini.ChatStream("m", True)), MODEL),
    ("observe/bedrock", "bedrock", lambda: Observed(bedrock.ChatStream("m", True)), None),
]


PASSTHROUGH = {"chat/openai", "chat/openai-unasked", "messages/anthropic"} | {
    name for name, *_ in STREAMS if name.startswith("observe/")
}


@pytest.mark.parametrize(("name", "provider", "make", "model"), STREAMS, ids=[s[0] for s in STREAMS])
@pytest.mark.parametrize("reply", [REPLY, TOOL_REPLY], ids=["text", "tools"])
def test_stream_usage_split_anywhere(
    name: str, provider: str, make: Callable[[], Any], model: str | None, reply: Reply
) -> None:
    data = _native(provider, reply)
    expected = Usage(reply.input_tokens, reply.output_tokens)
    rng = random.Random(name)
    splits = [[], every_byte(data)] + [
        sorted(rng.sample(range(1, len(data)), rng.randint(1, min(40, len(data) - 1)))) for _ in range(5)
    ]
    outputs = set()
    for cuts in splits:
        stream = make()
        assert stream.usage is None and stream.response_model is None  # nothing said yet
        outputs.add(feed(stream, data, cuts))
        assert stream.usage == expected, cuts
        assert stream.response_model == model
    if name in PASSTHROUGH:
        # Translators make ids of their own; the conformance tests compare their frames.
        assert len(outputs) == 1, "the same stream, however split, gives the same bytes"
    if name.startswith("observe/"):
        assert outputs == {data}, "an observer passes the provider's bytes unchanged"


def test_observer_passes_bytes_unchanged_in_whole_events() -> None:
    data = _native("anthropic", TOOL_REPLY) + b": a comment\r\n\r\n"
    observer = anthropic.AnthropicStreamObserver()
    out = b""
    for i in range(len(data)):
        piece = observer.feed(data[i : i + 1])
        assert not piece or piece.endswith((b"\n\n", b"\r\n\r\n")), piece
        out += piece
    assert out == data
    assert observer.finish() == b""


def test_observer_ends_a_stream_cut_short_with_an_error_event() -> None:
    """As the translated Messages streams do (messages_common.TRUNCATED)."""
    data = _native("anthropic", TOOL_REPLY)
    cut = data[: data.index(b"event: message_delta")]
    observer = anthropic.AnthropicStreamObserver()
    out = observer.feed(cut) + observer.finish()
    assert out.startswith(cut) and out[len(cut) :].startswith(b"event: error\n")
    assert json.loads(out[len(cut) :].split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    assert observer.finish() == b""


@pytest.mark.parametrize("reply", [REPLY, TOOL_REPLY], ids=["text", "tools"])
def test_unasked_openai_usage_is_removed_byte_for_byte(reply: Reply) -> None:
    """The gateway forces include_usage: the client must get the stream the provider sends without it."""
    forced = _native("openai", reply)
    unforced = b"".join(formats.openai_stream(reply, MODEL, include_usage=False)) + formats.OPENAI_DONE
    assert forced != unforced
    for cuts in ([], every_byte(forced)):
        assert feed(openai.ChatStream("m", include_usage=False), forced, cuts) == unforced


# ---------------------------------------------------------------- running totals: set, never add


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


ANTHROPIC_RUNNING = _sse(
    {
        "type": "message_start",
        "message": {
            "id": "m",
            "model": "claude-x",
            "role": "assistant",
            "content": [],
            "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
    {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 10}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b"}},
    {"type": "content_block_stop", "index": 0},
    # The final totals; newer APIs repeat the input counts here too.
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"input_tokens": 5, "output_tokens": 30},
    },
    {"type": "message_stop"},
)
GEMINI_RUNNING = b"".join(
    b"data: "
    + json.dumps(
        {
            "candidates": [
                {
                    "index": 0,
                    "content": {"parts": [{"text": "x"}]},
                    **({"finishReason": "STOP"} if n == 3 else {}),
                }
            ],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": n, "thoughtsTokenCount": 2},
            "modelVersion": "gemini-x",
        }
    ).encode()
    + b"\r\n\r\n"
    for n in (1, 2, 3)
)
BEDROCK_RUNNING = b"".join(
    bedrock_event(kind, payload)
    for kind, payload in [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1}}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4}}),
    ]
)

RUNNING: list[tuple[str, bytes, Callable[[], Any], Usage]] = [
    ("chat/anthropic", ANTHROPIC_RUNNING, lambda: anthropic.ChatStream("m", True), Usage(7, 30, 2)),
    ("messages/anthropic", ANTHROPIC_RUNNING, lambda: codec("anthropic", "m").stream("m"), Usage(7, 30, 2)),
    ("observe/anthropic", ANTHROPIC_RUNNING, lambda: anthropic.AnthropicStreamObserver(), Usage(7, 30, 2)),
    ("chat/gemini", GEMINI_RUNNING, lambda: gemini.ChatStream("m", True), Usage(4, 5, reasoning_tokens=2)),
    (
        "messages/gemini",
        GEMINI_RUNNING,
        lambda: codec("gemini", "m").stream("m"),
        Usage(4, 5, reasoning_tokens=2),
    ),
    ("chat/bedrock", BEDROCK_RUNNING, lambda: bedrock.ChatStream("m", True), Usage(3, 4)),
    ("messages/bedrock", BEDROCK_RUNNING, lambda: codec("bedrock", "m").stream("m"), Usage(3, 4)),
]


@pytest.mark.parametrize(("name", "data", "make", "expected"), RUNNING, ids=[r[0] for r in RUNNING])
def test_running_totals_are_set_not_added(
    name: str, data: bytes, make: Callable[[], Any], expected: Usage
) -> None:
    for cuts in ([], every_byte(data)):
        stream = make()
        feed(stream, data, cuts)
        assert stream.usage == expected


def test_thinking_left_out_of_completion_tokens_is_billed_output() -> None:
    """Gemini's OpenAI-compatible endpoint: 7 + 12 of a 402 total; the rest is thinking."""
    u = {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 402}
    assert from_openai(u) == Usage(7, 395)  # accounting: what the provider bills
    assert from_openai(u, billed_total=False) == Usage(7, 12)  # a client's answer: as the provider said
    assert from_openai({"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 3}) == Usage(7, 12)
