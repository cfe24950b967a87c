"""A parameter the provider cannot express is a 400 naming it, never dropped silently.

Each translator to another provider's API has one table (``REQUEST_FIELDS``, see
``extproc/translate/fields.py``); these tests drive every entry of every table.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable
from typing import Any

import pytest
from anthropic.types import message_create_params as anthropic_params
from openai.types.chat import completion_create_params as openai_params

from extproc.translate import anthropic, bedrock, gemini, messages_bedrock, messages_openai
from extproc.translate.base import TranslationError
from extproc.translate.fields import NO_NOOP, FieldTable
from extproc.translate.messages import GEMINI_FIELDS, codec

CHAT_MSG = [{"role": "user", "content": "hi"}]
MESSAGES_MSG = [{"role": "user", "content": "hi"}]

# name -> (translate a chat.completions request, its table)
CHAT: dict[str, tuple[Callable[[dict[str, Any]], Any], FieldTable]] = {
    "anthropic": (lambda r: anthropic.chat_request(r, "claude-x"), anthropic.REQUEST_FIELDS),
    "vertex-claude": (lambda r: anthropic.vertex_chat_request(r, "claude-x"), anthropic.REQUEST_FIELDS),
    "gemini": (lambda r: gemini.chat_request(r, "gemini-x"), gemini.REQUEST_FIELDS),
    "bedrock": (lambda r: bedrock.chat_request(r, "amazon.nova-pro-v1:0"), bedrock.REQUEST_FIELDS),
}
# name -> (translate a Messages request, its table)
MESSAGES: dict[str, tuple[Callable[[dict[str, Any]], Any], FieldTable]] = {
    "openai": (lambda r: codec("openai", "gpt-x").request(r, "gpt-x"), messages_openai.REQUEST_FIELDS),
    "azure": (lambda r: codec("azure", "gpt-x").request(r, "gpt-x"), messages_openai.REQUEST_FIELDS),
    "gemini": (lambda r: codec("gemini", "gemini-x").request(r, "gemini-x"), GEMINI_FIELDS),
    "vertex-gemini": (lambda r: codec("vertex", "gemini-x").request(r, "gemini-x"), GEMINI_FIELDS),
    "bedrock": (lambda r: codec("bedrock", "m").request(r, "m"), messages_bedrock.REQUEST_FIELDS),
}

# A value for each refused field that asks for something (none of them a no-op).
MEANINGFUL: dict[str, Any] = {
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"50256": -100},
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "seed": 42,
    "parallel_tool_calls": False,
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {},
    "verbosity": "low",
    "moderation": {"model": "omni-moderation-latest"},
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": "auto",
    "top_k": 5,
    "container": "container_1",
    "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
    "inference_geo": "us",
}
# A value for each ignored field, as clients send them.
IGNORED_VALUES: dict[str, Any] = {
    "stream_options": {"include_usage": True},
    "store": True,
    "metadata": {"user_id": "u-1"},
    "service_tier": "auto",
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"mode": "explicit"},
    "safety_identifier": "hash",
    "user": "u-1",
    "speed": "fast",
    "cache_control": {"type": "ephemeral"},
    "diagnostics": {"previous_message_id": "msg_1"},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
}


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "alias", "messages": CHAT_MSG, **fields}


def _messages(**fields: Any) -> dict[str, Any]:
    return {"model": "alias", "max_tokens": 100, "messages": MESSAGES_MSG, **fields}


def _refused(translate: Callable[[dict[str, Any]], Any], req: dict[str, Any]) -> TranslationError:
    with pytest.raises(TranslationError) as exc:
        translate(req)
    return exc.value


# ---------------------------------------------------------------- the fault


def test_logprobs_to_anthropic_is_a_400_naming_it() -> None:
    """Before: a 200 with logprobs null. The README promises a 400 naming the parameter."""
    for name in ("anthropic", "vertex-claude", "bedrock"):
        err = _refused(CHAT[name][0], _chat(logprobs=True, top_logprobs=2))
        assert err.param == "logprobs"
        assert "not supported" in str(err)
    assert _refused(CHAT["anthropic"][0], _chat(top_logprobs=2)).param == "top_logprobs"


# ---------------------------------------------------------------- every entry of every table

CHAT_CASES = [(name, key) for name, (_, table) in CHAT.items() for key in sorted(table.unsupported)]
MESSAGES_CASES = [(name, key) for name, (_, table) in MESSAGES.items() for key in sorted(table.unsupported)]


@pytest.mark.parametrize(("name", "key"), CHAT_CASES, ids=[f"{n}:{k}" for n, k in CHAT_CASES])
def test_chat_unsupported_field_is_refused_unless_noop(name: str, key: str) -> None:
    translate, table = CHAT[name]
    assert _refused(translate, _chat(**{key: MEANINGFUL[key]})).param == key
    noop = table.unsupported[key]
    if noop is not NO_NOOP:
        translate(_chat(**{key: copy.deepcopy(noop)}))  # the default asks for nothing


@pytest.mark.parametrize(("name", "key"), MESSAGES_CASES, ids=[f"{n}:{k}" for n, k in MESSAGES_CASES])
def test_messages_unsupported_field_is_refused(name: str, key: str) -> None:
    translate, _ = MESSAGES[name]
    assert _refused(translate, _messages(**{key: MEANINGFUL[key]})).param == key


@pytest.mark.parametrize("name", sorted(CHAT))
def test_chat_ignored_fields_are_dropped(name: str) -> None:
    translate, table = CHAT[name]
    assert table.ignored, "each table says what it may drop"
    for key, why in table.ignored.items():
        assert len(why) > 20, f"{key}: say why dropping it keeps the answer"
        body = translate(_chat(**{key: IGNORED_VALUES[key]}))
        assert key not in body


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_messages_ignored_fields_are_dropped(name: str) -> None:
    translate, table = MESSAGES[name]
    for key in table.ignored:
        body = translate(_messages(**{key: IGNORED_VALUES[key]}))
        assert key not in body


@pytest.mark.parametrize("name", sorted(CHAT))
def test_chat_unknown_field_is_refused_naming_it(name: str) -> None:
    err = _refused(CHAT[name][0], _chat(brand_new_parameter=1))
    assert err.param == "brand_new_parameter" and "unknown parameter" in str(err)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_messages_unknown_field_is_refused_naming_it(name: str) -> None:
    err = _refused(MESSAGES[name][0], _messages(compaction={"type": "auto"}))
    assert err.param == "compaction"


@pytest.mark.parametrize("name", sorted(CHAT) + [f"messages/{n}" for n in sorted(MESSAGES)])
def test_null_is_absent(name: str) -> None:
    if name.startswith("messages/"):
        translate, table = MESSAGES[name.removeprefix("messages/")]
        req = _messages(**dict.fromkeys(table.unsupported))
    else:
        translate, table = CHAT[name]
        req = _chat(**dict.fromkeys(table.unsupported), brand_new_parameter=None)
    translate(req)


def test_boolean_noop_matches_only_a_boolean() -> None:
    # 0 == False in Python; "logprobs": 0 is not the no-op false, nor "presence_penalty": false 0.
    assert _refused(CHAT["anthropic"][0], _chat(presence_penalty=False)).param == "presence_penalty"
    assert _refused(CHAT["anthropic"][0], _chat(logprobs=0)).param == "logprobs"
    CHAT["anthropic"][0](_chat(presence_penalty=0.0, logprobs=False, top_logprobs=0, logit_bias={}))


# ---------------------------------------------------------------- the tables are deliberate


def _sdk_fields(typed_dict: Any) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


# Anthropic SDK arguments that travel as headers, not in the body.
_ANTHROPIC_HEADER_ARGS = {"user_profile_id", "workspace_id"}


@pytest.mark.parametrize("name", sorted(CHAT))
def test_every_openai_chat_parameter_is_classified(name: str) -> None:
    """Each parameter the OpenAI SDK knows is mapped, ignored with a reason, or refused."""
    table = CHAT[name][1]
    known = table.mapped | set(table.ignored) | set(table.unsupported)
    assert _sdk_fields(openai_params.CompletionCreateParamsBase) - known == set()


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_anthropic_messages_parameter_is_classified(name: str) -> None:
    table = MESSAGES[name][1]
    known = table.mapped | set(table.ignored) | set(table.unsupported)
    params = _sdk_fields(anthropic_params.MessageCreateParamsBase) - _ANTHROPIC_HEADER_ARGS
    assert params - known == set()


def test_a_field_is_listed_once() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        FieldTable("X", frozenset({"a"}), {"a": "why"})


# ---------------------------------------------------------------- fields that are mapped after all


def test_bedrock_top_k_goes_to_the_model() -> None:
    body = bedrock.chat_request(_chat(top_k=5, reasoning_effort="low", max_tokens=2000), "anthropic.claude-x")
    assert body["additionalModelRequestFields"] == {
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


def test_disable_parallel_tool_use() -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}
    req = _messages(tools=[tool], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert MESSAGES["openai"][0](req)["parallel_tool_calls"] is False
    for name in ("gemini", "vertex-gemini", "bedrock"):
        assert _refused(MESSAGES[name][0], req).param == "tool_choice"
    # Without tools there is nothing to call in parallel: nothing is lost.
    for name in ("gemini", "bedrock"):
        MESSAGES[name][0](_messages(tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
