"""Malformed client requests are the gateway's 400 naming the parameter, for every provider.

Each request goes through the edge (``client_request.parse_body``) and then the translator of
every provider kind (``edge.through_edge``), as the router phase and egress run them: a wrong
type must never reach a translator and crash it (a 500 "internal gateway error").
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from extproc import schema
from extproc.errors import GatewayError
from extproc.pipeline import client_request

from .conformance_util import corpus
from .edge import outcome, routes, through_edge

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _with(base: dict, path: str, value: Any) -> dict:
    """``base`` with ``value`` at a dotted path (list indices as numbers)."""
    body = copy.deepcopy(base)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    here: Any = body
    for step in parents:
        here = here[step]
    here[last] = value
    return body


# (the field, its bad value, the param the 400 must name), on chat completions.
CHAT_CASES: list[tuple[str, Any, str]] = [
    ("stream_options", True, "stream_options"),
    ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
    ("tools", "bad", "tools"),
    ("tools", ["bad"], "tools[0]"),
    ("tools", [{"type": "function", "function": "f"}], "tools[0].function"),
    ("tools", [{"type": "function", "function": {"name": 5}}], "tools[0].function.name"),
    ("messages", ["hi"], "messages[0]"),
    ("messages", [{"role": "user"}], "messages[0].content"),
    ("messages", [{"role": "wizard", "content": "x"}], "messages[0].role"),
    ("messages", [{"content": "x"}], "messages[0].role"),
    ("messages", [{"role": "user", "content": 5}], "messages[0].content"),
    ("messages", [{"role": "user", "content": [5]}], "messages[0].content[0]"),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}],
     "messages[0].content[0].image_url.url"),
    ("messages", [{"role": "user", "content": [{"type": "file", "file": "x"}]}], "messages[0].content[0].file"),
    ("messages", [{"role": "assistant", "content": "x", "tool_calls": "c"}], "messages[0].tool_calls"),
    ("messages", [{"role": "assistant", "tool_calls": [{**TOOL_CALL, "function": None}]}],
     "messages[0].tool_calls[0].function"),
    ("messages", [{"role": "assistant", "tool_calls": [{**TOOL_CALL, "function": {"name": "f", "arguments": 5}}]}],
     "messages[0].tool_calls[0].function.arguments"),
    ("messages", [{"role": "tool", "content": "r"}], "messages[0].tool_call_id"),
    ("stop", 5, "stop"),
    ("stop", [5], "stop[0]"),
    ("response_format", "json", "response_format"),
    ("response_format", {"type": "json_schema", "json_schema": "s"}, "response_format.json_schema"),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "n", "schema": 7}},
     "response_format.json_schema.schema"),
    ("reasoning_effort", 5, "reasoning_effort"),
    ("max_completion_tokens", "100", "max_completion_tokens"),
    ("max_tokens", 1.5, "max_tokens"),
    ("max_tokens", True, "max_tokens"),
    ("temperature", "hot", "temperature"),
    ("tool_choice", {"type": "function", "function": "f"}, "tool_choice.function"),
    ("tool_choice", {"type": "function"}, "tool_choice.function"),
    ("tool_choice", 5, "tool_choice"),
    ("stream", "yes", "stream"),
    ("n", "1", "n"),
    ("user", 5, "user"),
    ("model", 5, "model"),
    ("model", "m" * (schema.MAX_MODEL_CHARS + 1), "model"),
    ("metadata", {"k": 5}, "metadata.k"),
]  # fmt: skip

# The same on Anthropic Messages; Anthropic's error has no param, its message starts with the path.
MESSAGES_CASES: list[tuple[str, Any, str]] = [
    ("messages", ["hi"], "messages.0"),
    ("messages", "hi", "messages"),
    ("messages", [{"role": "user"}], "messages.0.content"),
    ("messages", [{"role": "tool", "content": "x"}], "messages.0.role"),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages.0.content.0.text"),
    ("messages", [{"role": "user", "content": [{"type": "image", "source": "x"}]}], "messages.0.content.0.source"),
    ("messages", [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": 5, "data": "x"}}]}],
     "messages.0.content.0.source.media_type"),
    ("messages", [{"role": "user", "content": [{"type": "document", "source": {"type": "content", "content": 5}}]}],
     "messages.0.content.0.source.content"),
    ("messages", [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}],
     "messages.0.content.0.input"),
    ("messages", [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}]}],
     "messages.0.content.0.content.0.text"),
    ("messages", [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}]}],
     "messages.0.content.0.is_error"),
    ("messages", [{"role": "user", "content": [{"type": 5}]}], "messages.0.content.0.type"),
    ("system", 5, "system"),
    ("system", [{"type": "text", "text": None}], "system.0.text"),
    ("tools", "bad", "tools"),
    ("tools", [{"name": "f", "input_schema": "s"}], "tools.0.input_schema"),
    ("tool_choice", "auto", "tool_choice"),
    ("tool_choice", {"type": "tool", "name": 5}, "tool_choice.name"),
    ("thinking", {"type": "enabled", "budget_tokens": "lots"}, "thinking.budget_tokens"),
    ("output_config", {"format": "json"}, "output_config.format"),
    ("metadata", {"user_id": 5}, "metadata.user_id"),
    ("stop_sequences", "x", "stop_sequences"),
    ("max_tokens", "100", "max_tokens"),
    ("top_k", 1.5, "top_k"),
    ("stream", 1, "stream"),
]  # fmt: skip


def _assert_400_everywhere(api: str, body: dict, param: str) -> list[GatewayError]:
    errors = []
    for provider, err in outcome(api, body):
        assert err is not None, f"{provider} translated a malformed request"
        assert err.status == 400, f"{provider}: {err.status} {err.message}"
        errors.append(err)
    return errors


@pytest.mark.parametrize(
    ("field", "value", "param"), CHAT_CASES, ids=[c[2] + "=" + repr(c[1])[:20] for c in CHAT_CASES]
)
def test_malformed_chat_field_is_a_400_naming_it_for_every_provider(
    field: str, value: Any, param: str
) -> None:
    for err in _assert_400_everywhere("completions", _with(CHAT, field, value), param):
        assert err.param == param, err.message
        assert f"'{param}'" in err.message


@pytest.mark.parametrize(
    ("field", "value", "param"), MESSAGES_CASES, ids=[c[2] + "=" + repr(c[1])[:20] for c in MESSAGES_CASES]
)
def test_malformed_messages_field_is_a_400_naming_it_for_every_provider(
    field: str, value: Any, param: str
) -> None:
    for err in _assert_400_everywhere("messages", _with(MESSAGES, field, value), param):
        assert err.param == param
        assert err.message.startswith(f"{param}: "), err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"input": 5}, "input"),
        ({"input": [1.5]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": "a", "dimensions": "8"}, "dimensions"),
        ({"input": "a", "model": ["m"]}, "model"),
    ],
)
def test_malformed_embeddings_field_is_a_400_naming_it(body: dict, param: str) -> None:
    for err in _assert_400_everywhere("embeddings", body, param):
        assert err.param is not None and err.param.startswith(param), err.message


def test_openai_wording_says_what_was_expected_and_what_came() -> None:
    (_, err), *_ = outcome("completions", _with(CHAT, "stop", 5))
    assert err is not None
    assert (
        err.message == "Invalid type for 'stop': expected a string or an array, but got an integer instead."
    )
    assert err.code == "invalid_type"
    (_, err), *_ = outcome("completions", {"model": "m", "messages": [{"role": "tool", "content": "r"}]})
    assert err is not None and err.code == "missing_required_parameter"
    assert err.message == "Missing required parameter: 'messages[0].tool_call_id'."


def test_anthropic_wording_is_the_path_and_the_reason() -> None:
    (_, err), *_ = outcome("messages", _with(MESSAGES, "messages", ["hi"]))
    assert err is not None
    assert err.message == "messages.0: Input should be a valid dictionary"


@pytest.mark.parametrize("api", ["completions", "messages"])
def test_well_typed_rich_requests_still_translate(api: str) -> None:
    body = RICH[api]
    results = dict(outcome(api, body))
    # Every provider either carries it or refuses what it cannot express (never a crash);
    # most carry it whole.
    failed = {p: err.message for p, err in results.items() if err is not None}
    assert all(err.status == 400 for err in results.values() if err is not None)
    assert len(failed) <= 2, failed


RICH: dict[str, dict] = {
    "completions": {
        "model": "m",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "stream": True, "stream_options": {"include_usage": True}, "max_completion_tokens": 4000,
        "stop": ["x"], "temperature": 1, "reasoning_effort": "low", "user": "u",
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
    },
    "messages": {
        "model": "m", "max_tokens": 4000, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": "1"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r", "is_error": True}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"}, "stream": True, "stop_sequences": ["x"], "temperature": 0.5,
        "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 2048},
    },
}  # fmt: skip


# --- the body as a whole -----------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    """A chat body whose tool parameters nest ``depth`` levels in all."""
    inner = b'{"a":' * (depth - 4) + b"1" + b"}" * (depth - 4)
    return (
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
        b'"tools":[{"type":"function","function":{"name":"f","parameters":' + inner + b"}}]}"
    )


@pytest.mark.parametrize("depth", [schema.MAX_DEPTH + 1, 300, 1000])
def test_nesting_deeper_than_the_gateway_serializes_is_a_400(depth: int) -> None:
    raw = _nested(depth)
    for route in routes("completions"):
        with pytest.raises(GatewayError) as info:
            through_edge("completions", raw, route)
        assert info.value.status == 400
        assert "nested too deeply" in info.value.message


def test_nesting_within_the_limit_is_translated() -> None:
    raw = _nested(schema.MAX_DEPTH)
    (route,) = [r for r in routes("completions") if r.name == "bedrock-claude"]
    through_edge("completions", raw, route)  # Converse nests the schema deeper still


def test_the_depth_limit_is_what_orjson_can_serialize() -> None:
    # The check relies on orjson's own limit (254 levels); if orjson moves it, this says so.
    orjson.dumps(orjson.loads(b"[" * 254 + b"]" * 254))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(orjson.loads(b"[" * 255 + b"]" * 255))


@pytest.mark.parametrize("api", ["completions", "messages", "embeddings"])
@pytest.mark.parametrize("raw", [b"", b"  \r\n"])
def test_an_empty_body_is_a_400_saying_so(api: str, raw: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        client_request.parse_body(routes(api)[0], api, raw)
    assert info.value.status == 400
    assert info.value.message.startswith("the request body is empty; send a JSON")


def test_a_model_at_the_length_limit_is_taken() -> None:
    body = _with(CHAT, "model", "m" * schema.MAX_MODEL_CHARS)
    assert dict(outcome("completions", body))["openai"] is None


@pytest.mark.parametrize("api", ["completions", "messages", "embeddings"])
def test_every_corpus_request_passes_the_edge(api: str) -> None:
    """Real clients' requests (the agentgateway corpus) are well-formed: none may be refused."""
    files = sorted((corpus() / "requests" / api).glob("*.json"))
    assert files
    for path in files:
        schema.validate(api, orjson.loads(path.read_bytes()))
