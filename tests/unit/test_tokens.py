"""Token estimates before the call: exact for OpenAI models, offline, and never raising."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from extproc import tokens
from extproc.tokens import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    encoding_for,
    estimate_prompt_tokens,
    estimate_request_tokens,
)

from .conformance_util import corpus
from .wrong_types import mutate

# Counts tiktoken gives (checked against tiktoken 0.14 with the published BPE files).
TIKTOKEN_COUNTS: list[tuple[str, int, int]] = [
    # (text, o200k_base, cl100k_base)
    ("hello world", 2, 2),
    ("Ünïcödé 日本語のテキスト 🧠 مرحبا", 16, 23),
    ("def f(x):\n    return {'a': [1, 2, 3]}\n", 18, 18),
    ("<|endoftext|> is text here", 10, 10),  # a special token in a prompt is just text
]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-5.2", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("openai/gpt-oss-120b", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", None),
        ("gemini-2.5-pro", None),
        ("anthropic.claude-3-haiku", None),
        (None, None),
    ],
)
def test_encoding_for(model: Any, encoding: str | None) -> None:
    assert encoding_for(model) == encoding


def test_the_exact_tokenizer_is_installed() -> None:
    assert tokens.toktok is not None, "toktok-rs is a dependency; without it every count is bytes/4"


@pytest.mark.parametrize(("text", "o200k", "cl100k"), TIKTOKEN_COUNTS)
def test_openai_counts_are_tiktoken_counts(text: str, o200k: int, cl100k: int) -> None:
    assert estimate_prompt_tokens("embeddings", {"input": text}, "gpt-4o") == o200k
    assert estimate_prompt_tokens("embeddings", {"input": text}, "text-embedding-ada-002") == cl100k
    assert estimate_prompt_tokens("embeddings", {"input": text}, "gemini-embedding-001") == o200k  # the proxy


def test_a_text_the_tokenizer_rejects_falls_back_alone() -> None:
    """A lone surrogate cannot be tokenized: that text counts as bytes/4, its neighbours exactly."""
    body = {"input": ["hello world", "\ud800abc"]}
    assert estimate_prompt_tokens("embeddings", body, "gpt-4o") == 2 + 1  # "?abc": 4 bytes, 1 token


def test_chat_counts_like_openai() -> None:
    # OpenAI's chat format: 3 per message + role + content, 1 more for a name, 3 priming the reply.
    body = {"messages": [{"role": "user", "content": "hello world"}]}
    assert estimate_prompt_tokens("completions", body, "gpt-4o") == 3 + 1 + 2 + 3
    named = {"messages": [{"role": "user", "name": "bob", "content": "hello world"}]}
    assert estimate_prompt_tokens("completions", named, "gpt-4o") == 9 + 1 + 1


def test_chat_counts_every_part() -> None:
    base = estimate_prompt_tokens("completions", {"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o")
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}},
                ],
            }
        ]
    }
    assert estimate_prompt_tokens("completions", parts, "gpt-4o") == base + IMAGE_TOKENS + DOCUMENT_TOKENS
    tools = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        ],
    }
    assert estimate_prompt_tokens("completions", tools, "gpt-4o") > base
    call = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"city": "Paris"}'}}],
            },
        ]
    }
    assert estimate_prompt_tokens("completions", call, "gpt-4o") > base + 3


def test_messages_counts_system_blocks_and_tool_results() -> None:
    body = {
        "system": [{"type": "text", "text": "hello world"}],
        "messages": [
            {"role": "user", "content": "hello world"},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "hello world"}],
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
        ],
    }
    # Three "hello world" (2 each), two messages (3 each), the reply (3), one image.
    assert estimate_prompt_tokens("messages", body, "claude-x") == 6 + 6 + 3 + IMAGE_TOKENS


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello world", 2),
        (["hello world", "hello world"], 4),
        ([1, 2, 3], 3),  # one pre-tokenised input
        ([[1, 2], [3]], 3),
        ([], 0),
        (7, 0),
    ],
)
def test_embeddings(value: Any, expected: int) -> None:
    assert estimate_prompt_tokens("embeddings", {"input": value}, "text-embedding-3-small") == expected
    assert estimate_request_tokens("embeddings", {"input": value}, "text-embedding-3-small") == expected


@pytest.mark.parametrize(
    ("api", "fields", "output"),
    [
        ("completions", {}, DEFAULT_MAX_OUTPUT_TOKENS),
        ("completions", {"max_tokens": 100}, 100),
        ("completions", {"max_tokens": 100, "max_completion_tokens": 50}, 50),  # the newer name wins
        ("completions", {"max_tokens": 100, "n": 3}, 300),  # every choice is generated
        ("completions", {"max_tokens": "100", "n": True}, DEFAULT_MAX_OUTPUT_TOKENS),
        ("messages", {"max_tokens": 200}, 200),
        ("messages", {"max_tokens": -1}, DEFAULT_MAX_OUTPUT_TOKENS),
    ],
)
def test_request_estimate_adds_the_output_limit(api: str, fields: dict[str, Any], output: int) -> None:
    body = {"messages": [{"role": "user", "content": "hello world"}], **fields}
    assert (
        estimate_request_tokens(api, body, "gpt-4o") == estimate_prompt_tokens(api, body, "gpt-4o") + output
    )


def _fixtures(api: str) -> list[Any]:
    return [json.loads(p.read_text()) for p in sorted((corpus() / "requests" / api).glob("*.json"))]


@pytest.mark.parametrize("api", ["completions", "messages", "embeddings"])
def test_never_raises_on_odd_input(api: str) -> None:
    samples = _fixtures(api)
    rng = random.Random(api)
    for _ in range(400):
        body = mutate(rng.choice(samples), rng)
        for model in ("gpt-4o", "claude-x", None, 3):
            # The walkers themselves must cope (the public guard is the last resort only).
            n = tokens._prompt_tokens(api, body, model)  # type: ignore[arg-type]
            assert isinstance(n, int) and n >= 0
            assert estimate_request_tokens(api, body, model) >= n  # type: ignore[arg-type]
    deep: Any = "x"
    for _ in range(600):
        deep = [{"type": "tool_result", "content": deep}]
    odd = [None, [], "x", 3, {"messages": "nope"}, {"messages": [None, 3, {"content": {"a": 1}}]}]
    odd += [{"messages": [{"role": "user", "content": deep}]}, {"messages": [{"content": "\ud800 lone"}]}]
    odd += [{"input": ["\udfff"]}, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}]
    odd += [{"tools": [{1: "non-string key"}], "messages": []}, {"tools": deep, "messages": []}]
    for body in odd:
        assert estimate_prompt_tokens(api, body, "gpt-4o") >= 0
        assert estimate_request_tokens(api, body, "gpt-4o") >= 0
    assert (
        estimate_prompt_tokens("responses", {"input": "hello world"}, "gpt-4o") > 0
    )  # an API without a walker


def test_works_offline() -> None:
    """The encodings are in the wheel: counting opens no connection and reads no hub."""
    script = textwrap.dedent(
        """
        import os, socket
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TIKTOKEN_CACHE_DIR"] = "/nonexistent"
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from extproc import tokens
        tokens.warm_up()
        n = tokens.estimate_prompt_tokens("embeddings", {"input": "hello world"}, "gpt-4o")
        m = tokens.estimate_prompt_tokens("embeddings", {"input": "hello world"}, "gpt-4-turbo")
        print(n, m, tokens.toktok is not None)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["2", "2", "True"]


def test_a_text_counted_before_is_not_tokenized_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversation resends its history each turn: only the new message is tokenized."""
    real = tokens.toktok._encoding("o200k_base")
    seen: list[str] = []

    class Spy:
        def count(self, text: str) -> int:
            seen.append(text)
            return int(real.count(text))

    monkeypatch.setattr(tokens, "_COUNTS", {})
    monkeypatch.setattr(tokens.toktok, "_encoding", lambda _name: Spy())
    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    turn2 = [*turn1, {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "and again"}]
    first = estimate_prompt_tokens("completions", {"messages": turn1}, "gpt-4o")
    second = estimate_prompt_tokens("completions", {"messages": turn2}, "gpt-4o")
    assert seen == ["system", "Be brief.", "user", "hello world", "assistant", "Hi.", "and again"]
    monkeypatch.setattr(tokens, "_COUNTS", {})  # the same counts as with nothing counted before
    assert estimate_prompt_tokens("completions", {"messages": turn1}, "gpt-4o") == first
    assert estimate_prompt_tokens("completions", {"messages": turn2}, "gpt-4o") == second


def test_the_count_cache_is_bounded_and_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_COUNTS", {})
    monkeypatch.setattr(tokens, "_COUNTS_KEPT", 3)
    texts = [text for text, _, _ in TIKTOKEN_COUNTS] + ["one more", "and another"]
    for _ in range(2):
        for text in texts:
            exact = tokens.toktok.batch_count([text], "o200k_base")[0]
            assert estimate_prompt_tokens("embeddings", {"input": text}, "gpt-4o") == exact
            assert len(tokens._COUNTS) <= 3
