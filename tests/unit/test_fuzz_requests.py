"""Property-based fuzzing of client requests: the edge and every provider's translator.

Hypothesis builds requests for both client APIs (chat completions and Anthropic Messages) and
embeddings: well-formed ones, then mutated with wrong types, missing keys, unknown values and
extreme sizes. Each goes through parsing, validation and the translator of every provider
kind (``edge.outcome``); the property is that each one either translates or is the gateway's
400. Anything else (an exception, a 500) is a crash the client would have seen as "internal
gateway error".

Bounded and deterministic for CI: ``derandomize`` fixes the examples, no example database.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc import schema

from .edge import outcome

FUZZ = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- any JSON value, including the awkward ones ---------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # past 64 bits: orjson parses them as floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "text", "image", "function", "tool", "user", "auto", "json_schema", "base64"])
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_text = st.text(max_size=30)
_ids = st.sampled_from(["c1", "c2", "t1"])

# --- well-formed chat completions ------------------------------------------------------------------

_data_url = st.sampled_from(
    [
        "data:image/png;base64,AAAA",
        "data:application/pdf;base64,JVBER",
        "https://x.test/a.jpg",
        "s3://b/k.png",
    ]
)
_chat_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": _data_url})}
    ),
    st.fixed_dictionaries(
        {"type": st.just("file"), "file": st.fixed_dictionaries({"file_data": _data_url, "filename": _text})}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("input_audio"),
            "input_audio": st.fixed_dictionaries({"data": _text, "format": st.just("wav")}),
        }
    ),
)
_chat_content = _text | st.lists(_chat_part, max_size=3)
_tool_call = st.fixed_dictionaries(
    {
        "id": _ids,
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.just("f"), "arguments": st.sampled_from(["{}", '{"a": 1}', ""])}
        ),
    }
)
_chat_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": _chat_content}),
    st.fixed_dictionaries({"role": st.just("user"), "content": _chat_content}),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.none() | _text},
        optional={"tool_calls": st.lists(_tool_call, max_size=2), "reasoning_content": _text},
    ),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": _ids, "content": _chat_content}),
)
_schema = st.sampled_from(
    [{"type": "object"}, {"type": "object", "properties": {"a": {"type": "string"}}}, {"$ref": "#/$defs/x"}]
)
_chat_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.just("f")}, optional={"parameters": _schema}),
    }
)
chat_requests = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_chat_message, min_size=1, max_size=4)},
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
        "max_tokens": st.integers(-5, 10_000),
        "max_completion_tokens": st.integers(0, 10_000),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "n": st.integers(0, 3),
        "stop": _text | st.lists(_text, max_size=3),
        "tools": st.lists(_chat_tool, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required", "any", {"type": "function", "function": {"name": "f"}}]),
        "parallel_tool_calls": st.booleans(),
        "response_format": st.sampled_from(
            [{"type": "text"}, {"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}]
        ),
        "reasoning_effort": st.sampled_from(["none", "low", "medium", "high", "xhigh", "extreme"]),
        "user": _text,
        "seed": st.integers(0, 100),
        "logprobs": st.booleans(),
        "presence_penalty": st.floats(-2, 2),
    },
)  # fmt: skip

# --- well-formed Anthropic Messages ---------------------------------------------------------------

_source = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("base64"),
            "media_type": st.sampled_from(["image/png", "image/bmp", "application/pdf"]),
            "data": _text,
        }
    ),
    st.fixed_dictionaries({"type": st.just("url"), "url": _data_url}),
    st.fixed_dictionaries({"type": st.just("text"), "data": _text}),
)
_leaf_block = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("text"), "text": _text}, optional={"cache_control": st.just({"type": "ephemeral"})}
    ),
    st.fixed_dictionaries({"type": st.just("image"), "source": _source}),
    st.fixed_dictionaries({"type": st.just("document"), "source": _source}, optional={"title": _text}),
)
_block = st.one_of(
    _leaf_block,
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": _ids, "name": st.just("f"), "input": st.just({"a": 1})}
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_result"), "tool_use_id": _ids},
        optional={"content": _text | st.lists(_leaf_block, max_size=2), "is_error": st.booleans()},
    ),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": _text}, optional={"signature": _text}),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": _text}),
    st.fixed_dictionaries({"type": st.just("server_tool_use"), "id": _ids, "name": st.just("web_search")}),
)
_anthropic_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]),
        "content": _text | st.lists(_block, max_size=3),
    }
)
messages_requests = st.fixed_dictionaries(
    {"model": st.just("m"), "max_tokens": st.integers(1, 8000), "messages": st.lists(_anthropic_message, min_size=1, max_size=4)},
    optional={
        "system": _text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _text}), max_size=2),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "top_k": st.integers(0, 50),
        "stop_sequences": st.lists(_text, max_size=2),
        "metadata": st.fixed_dictionaries({"user_id": _text}),
        "tools": st.lists(
            st.one_of(
                st.fixed_dictionaries({"name": st.just("f")}, optional={"input_schema": _schema, "description": _text}),
                st.fixed_dictionaries({"type": st.just("web_search_20250305"), "name": st.just("web_search")}),
            ),
            max_size=2,
        ),
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none", "maybe"])},
            optional={"name": st.just("f"), "disable_parallel_tool_use": st.booleans()},
        ),
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled", "adaptive"])}, optional={"budget_tokens": st.integers(0, 50_000)}
        ),
        "output_config": st.fixed_dictionaries(
            {}, optional={"effort": st.sampled_from(["low", "high", "max"]),
                          "format": st.just({"type": "json_schema", "schema": {"type": "object"}})}
        ),
    },
)  # fmt: skip

embeddings_requests = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "input": _text | st.lists(_text, max_size=3) | st.lists(st.integers(0, 99), max_size=3),
    },
    optional={
        "dimensions": st.integers(-1, 4096),
        "encoding_format": st.sampled_from(["float", "base64", "hex"]),
        "task_type": st.sampled_from(["RETRIEVAL_QUERY", "CLUSTERING", "nonsense"]),
        "auto_truncate": st.booleans(),
        "user": _text,
    },
)

# --- mutations ------------------------------------------------------------------------------------


def _paths(value: Any, here: tuple = ()) -> list[tuple]:
    """Every place in ``value`` a mutation can hit."""
    found = [here]
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, (*here, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _paths(sub, (*here, i))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    out = list(value)
    out[head] = _replace(value[head], rest, new)
    return out


def _delete(value: Any, path: tuple) -> Any:
    if not path:
        return value
    *parent, last = path
    container = _get(value, tuple(parent))
    if isinstance(container, dict):
        return _replace(value, tuple(parent), {k: v for k, v in container.items() if k != last})
    return _replace(value, tuple(parent), [v for i, v in enumerate(container) if i != last])


def _get(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def _extreme(value: Any, kind: int) -> Any:
    if kind == 0:
        return "x" * 100_000  # a long string anywhere
    if kind == 1:
        return [value] * 2_000  # a long array
    nested: Any = value
    for _ in range(kind * 60):  # 60, 120, 180 levels
        nested = [nested]
    return nested


@st.composite
def mutated(draw: st.DrawFn, requests: st.SearchStrategy[dict]) -> Any:
    body: Any = draw(requests)
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["type", "type", "delete", "extreme"]))
        if op == "type":
            body = _replace(body, path, draw(json_values))
        elif op == "delete" and path:
            body = _delete(body, path)
        elif op == "extreme":
            body = _replace(body, path, _extreme(_get(body, path), draw(st.integers(0, 4))))
    return body


def _check(api: str, body: Any) -> None:
    raw = json.dumps(body, allow_nan=False).encode()  # the stdlib writes integers of any size
    for provider, err in outcome(api, raw):
        if err is not None:
            assert err.status == 400, f"{provider}: {err.status} {err.message}"


# --- the properties -------------------------------------------------------------------------------


@FUZZ
@given(mutated(chat_requests))
def test_chat_requests_translate_or_are_400s_for_every_provider(body: Any) -> None:
    _check("completions", body)


@FUZZ
@given(mutated(messages_requests))
def test_messages_requests_translate_or_are_400s_for_every_provider(body: Any) -> None:
    _check("messages", body)


@settings(FUZZ, max_examples=120)
@given(mutated(embeddings_requests))
def test_embeddings_requests_translate_or_are_400s_for_every_provider(body: Any) -> None:
    _check("embeddings", body)


@settings(FUZZ, max_examples=150)
@given(
    st.sampled_from(["completions", "messages", "embeddings"]),
    st.binary(max_size=200) | st.text(max_size=200),
)
def test_any_bytes_are_translated_or_a_400(api: str, raw: bytes | str) -> None:
    data = raw.encode() if isinstance(raw, str) else raw
    for provider, err in outcome(api, data):
        assert err is not None and err.status == 400, provider


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(["completions", "messages"]), st.integers(schema.MAX_DEPTH - 3, 400))
def test_deep_nesting_anywhere_is_translated_or_a_400(api: str, depth: int) -> None:
    inner: Any = "x"
    for _ in range(depth):
        inner = {"k": inner}
    if api == "completions":
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": inner}
    else:
        body = {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": inner,
        }
    _check(api, body)
