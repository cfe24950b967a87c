"""Messages-client translation (``extproc.translate.messages``) cases the corpus does not cover.

Per provider kind: request mapping, response mapping, errors and streams. Streams are
checked with the strict view of test_conformance_messages (well-formed event order),
fed whole and split at every byte.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from extproc.translate import bedrock
from extproc.translate.base import TranslationError
from extproc.translate.messages import codec
from extproc.translate.usage import Usage

from .conformance_util import every_byte, feed
from .test_conformance_messages import frames, sse_events, stream_view
from .test_translate_bedrock import _event as bedrock_event
from .test_translate_bedrock import _message as bedrock_message
from .wrong_types import mutate

KINDS = ["openai", "azure", "anthropic", "gemini", "vertex", "bedrock"]

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = {"type": "base64", "media_type": "image/png", "data": "aGVsbG8="}


def _req(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    msgs = list(messages) or [{"role": "user", "content": "hi"}]
    return {"model": "m", "max_tokens": 100, "messages": msgs, **kw}


TOOL_TURNS = [
    {"role": "user", "content": "weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "rain"},
            {
                "type": "tool_result",
                "tool_use_id": "t2",
                "content": [{"type": "text", "text": "no"}],
                "is_error": True,
            },
        ],
    },
]


def _translate(kind: str, req: dict[str, Any], model: str = "m") -> dict[str, Any]:
    original = copy.deepcopy(req)
    body = codec(kind, model).request(req, model)
    assert req == original, "request() must not modify the client's request"
    json.dumps(body)
    return body


# ---------------------------------------------------------------- request: OpenAI


def test_openai_basic_fields() -> None:
    req = _req(
        system="be brief",
        temperature=0.2,
        top_p=0.9,
        stop_sequences=["END"],
        stream=True,
        metadata={"user_id": "u-1"},
    )
    body = _translate("openai", req, "gpt-4o")
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_completion_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},  # usage for the final message_delta
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
    }


def test_openai_tools_and_tool_results() -> None:
    body = _translate("openai", _req(*TOOL_TURNS, tools=[WEATHER]))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "checking"}],
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "rain"}]},
        {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "no"}]},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_openai_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    body = _translate("openai", _req(tools=[WEATHER], tool_choice=choice))
    assert {k: body[k] for k in expected} == expected
    # Without tools OpenAI rejects tool_choice: it is left out.
    assert "tool_choice" not in _translate("openai", _req(tool_choice=choice))


def test_openai_images_documents_and_moved_tool_images() -> None:
    req = _req(
        {"role": "assistant", "content": [{"type": "tool_use", "id": "r", "name": "read", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "r", "content": [{"type": "image", "source": PNG}]},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "UERG"},
                    "title": "a.pdf",
                },
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
            ],
        },
    )
    msgs = _translate("openai", req)["messages"]
    assert msgs[1] == {"role": "tool", "tool_call_id": "r", "content": [{"type": "text", "text": ""}]}
    assert msgs[2] == {
        "role": "user",
        "content": [
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,aGVsbG8="},
            },  # from the tool result
            {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,UERG"}},
            {"type": "text", "text": "plain"},
        ],
    }


@pytest.mark.parametrize(
    ("thinking", "effort", "model", "tools", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "o3", False, "low"),
        ({"type": "enabled", "budget_tokens": 10000}, None, "o3", False, "medium"),
        ({"type": "enabled", "budget_tokens": 31999}, None, "o3", False, "high"),
        ({"type": "adaptive"}, "max", "o3", False, "xhigh"),
        ({"type": "adaptive"}, None, "o3", False, None),  # the model's default
        ({"type": "disabled"}, "high", "o3", False, None),
        (None, "high", "o3", False, None),  # effort alone does not turn reasoning on
        # GPT-5.2+ reject function tools with any effort but "none" on chat.completions.
        ({"type": "enabled", "budget_tokens": 4096}, None, "gpt-5.4", True, "none"),
        (None, None, "gpt-5.6-terra", True, "none"),
        ({"type": "enabled", "budget_tokens": 4096}, None, "gpt-5.1", True, "medium"),
    ],
)
def test_openai_reasoning_effort(
    thinking: dict[str, Any] | None, effort: str | None, model: str, tools: bool, expected: str | None
) -> None:
    req = _req(**({"thinking": thinking} if thinking else {}), **({"tools": [WEATHER]} if tools else {}))
    if effort:
        req["output_config"] = {"effort": effort}
    assert _translate("openai", req, model).get("reasoning_effort") == expected


def test_openai_drops_replayed_thinking_and_server_tools() -> None:
    req = _req(
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "a"},
            ],
        },
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
    )
    body = _translate("openai", req)
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "a"}]}
    assert "tools" not in body


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (
            _req(
                {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
            ),
            "messages",
        ),
        (_req({"role": "user", "content": [{"type": "search_result", "content": []}]}), "messages"),
        (_req({"role": "tool", "content": "x"}), "messages"),
        (_req(system=[{"type": "image", "source": PNG}]), "system"),
        (_req(tool_choice="auto", tools=[WEATHER]), "tool_choice"),
        (_req(output_config={"format": {"type": "regex"}}), "output_config"),
        ({"model": "m", "messages": "hi"}, "messages"),
        (_req({"role": "user", "content": [{"type": "image", "source": 1.5}]}), "messages"),
        (_req({"role": "user", "content": [{"type": "document", "source": "x"}]}), "messages"),
    ],
)
def test_openai_untranslatable_requests(req: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        codec("openai", "m").request(req, "m")
    assert err.value.param == param


# ---------------------------------------------------------------- request: Anthropic and Vertex Claude


def test_anthropic_is_passthrough_with_model_and_without_unsigned_thinking() -> None:
    req = _req(
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "from gpt", "signature": ""}]},
        {"role": "user", "content": "q2"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "a"},
            ],
        },
        {"role": "user", "content": "q3"},
        thinking={"type": "enabled", "budget_tokens": 2048},
        anything_new={"kept": True},
    )
    body = _translate("anthropic", req, "claude-x")
    assert body["model"] == "claude-x" and body["anything_new"] == {"kept": True}
    # Anthropic rejects unsigned thinking (our translation of other providers' reasoning).
    assert [m["content"] for m in body["messages"]] == ["q", "q2", req["messages"][3]["content"], "q3"]
    assert body["messages"][2] is req["messages"][3], "untouched turns are not copied"


def test_vertex_claude_body() -> None:
    req = _req(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [
                        {"type": "text", "text": "r", "cache_control": {"type": "ephemeral", "scope": "turn"}}
                    ],
                },
            ],
        },
        output_format={"type": "json_schema", "schema": {"type": "object"}},
        service_tier="auto",
        stream=True,
    )
    body = _translate("vertex", req, "claude-sonnet-4")
    assert "model" not in body and "service_tier" not in body and "output_format" not in body
    assert body["anthropic_version"] == "vertex-2023-10-16"
    assert body["stream"] is True
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert body["messages"][0]["content"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}


def test_vertex_picks_claude_or_gemini_by_model() -> None:
    assert "anthropic_version" in _translate("vertex", _req(), "claude-opus-4")
    assert "contents" in _translate("vertex", _req(), "gemini-2.5-pro")


# ---------------------------------------------------------------- request: Gemini


@pytest.mark.parametrize("kind", ["gemini", "vertex"])
def test_gemini_request(kind: str) -> None:
    req = _req(
        *TOOL_TURNS,
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "image", "source": PNG},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
            ],
        },
        system=[{"type": "text", "text": "be brief"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
        temperature=0.1,
        top_k=7,
        stop_sequences=["END"],
        thinking={"type": "enabled", "budget_tokens": 5000},
    )
    body = _translate(kind, req, "gemini-2.5-flash")
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert body["generationConfig"] == {
        "temperature": 0.1,
        "topK": 7,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 5000, "includeThoughts": True},  # the budget itself, unrounded
    }
    contents = body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "rain"}}},
        {"functionResponse": {"name": "get_weather", "response": {"error": "no"}}},  # is_error
    ]
    assert contents[4]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a.png"}},
    ]


@pytest.mark.parametrize(
    ("thinking", "effort", "budget"),
    [
        ({"type": "adaptive"}, None, -1),
        ({"type": "adaptive"}, "high", 4096),
        ({"type": "adaptive"}, "max", 8192),
    ],
)
def test_gemini_adaptive_thinking(thinking: dict[str, Any], effort: str | None, budget: int) -> None:
    req = _req(thinking=thinking, **({"output_config": {"effort": effort}} if effort else {}))
    gen = _translate("gemini", req, "gemini-2.5-pro")["generationConfig"]
    assert gen["thinkingConfig"] == {"thinkingBudget": budget, "includeThoughts": True}
    assert "thinkingConfig" not in _translate("gemini", _req(), "g").get("generationConfig", {})


# ---------------------------------------------------------------- request: Bedrock


def test_bedrock_request() -> None:
    req = _req(
        *TOOL_TURNS,
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        tools=[
            {**WEATHER, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "ws"},
        ],
        tool_choice={"type": "tool", "name": "get_weather"},
        temperature=0.3,
        top_p=0.8,
        top_k=9,
        stop_sequences=["END"],
        thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "u"},
    )
    body = _translate("bedrock", req, "anthropic.claude-sonnet-4-v1:0")
    assert body["system"] == [{"text": "sys"}, {"cachePoint": {"type": "default"}}]
    assert body["inferenceConfig"] == {
        "maxTokens": 100,
        "temperature": 0.3,
        "topP": 0.8,
        "stopSequences": ["END"],
    }
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "top_k": 9,
        "metadata": {"user_id": "u"},
    }
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER["input_schema"]},
                }
            },
            {"cachePoint": {"type": "default"}},
        ],
        "toolChoice": {"tool": {"name": "get_weather"}},
    }
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"text": "checking"},
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "t2", "name": "get_weather", "input": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"text": "rain"}]}},
                {"toolResult": {"toolUseId": "t2", "content": [{"text": "no"}], "status": "error"}},
            ],
        },
    ]


def test_bedrock_metadata_only_for_claude_and_tool_choice_none() -> None:
    req = _req(*TOOL_TURNS, metadata={"user_id": "u"}, tools=[WEATHER], tool_choice={"type": "none"})
    body = _translate("bedrock", req, "meta.llama3-70b")
    assert "additionalModelRequestFields" not in body  # Llama rejects Anthropic's metadata
    # Converse has no "none": no tools are offered, the placeholder keeps the history valid.
    assert body["toolConfig"] == {"tools": [bedrock.PLACEHOLDER_TOOL]}


def test_bedrock_content_blocks() -> None:
    req = _req(
        {
            "role": "user",
            "content": [
                {"type": "image", "source": PNG, "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "url", "url": "s3://b/k.jpg"}},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "hi"},
                    "title": "notes.txt",
                },
                {"type": "text", "text": ""},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "unsigned", "signature": ""},
                {"type": "redacted_thinking", "data": "RED"},
                {"type": "text", "text": "a"},
            ],
        },
    )
    body = _translate("bedrock", req, "anthropic.claude-3-7")
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"image": {"format": "png", "source": {"bytes": "aGVsbG8="}}},
                {"cachePoint": {"type": "default"}},
                {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://b/k.jpg"}}}},
                {"document": {"format": "txt", "name": "notestxt", "source": {"bytes": "aGk="}}},
            ],
        },
        {"role": "assistant", "content": [{"reasoningContent": {"redactedContent": "RED"}}, {"text": "a"}]},
    ]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}},
        {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
        {"type": "tool_use", "id": "x", "name": "f", "input": {}},  # not in a user turn
        {"type": "image", "source": 1.5},
        {"type": "document", "source": ["x"]},
    ],
)
def test_bedrock_untranslatable_blocks(block: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as err:
        codec("bedrock", "m").request(_req({"role": "user", "content": [block]}), "m")
    assert err.value.param == "messages"


# ---------------------------------------------------------------- responses


def _completion(message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3},
    }


@pytest.mark.parametrize(
    ("finish", "tools", "stop"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("stop", True, "tool_use"),  # some compatible servers finish tool calls with "stop"
        ("content_filter", False, "refusal"),
    ],
)
def test_openai_response_stop_reasons(finish: str, tools: bool, stop: str) -> None:
    calls = (
        [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}] if tools else []
    )
    resp = codec("openai", "m").response(_completion({"content": "x", "tool_calls": calls}, finish), "m")
    assert resp["stop_reason"] == stop
    if tools:
        assert resp["content"][-1] == {"type": "tool_use", "id": "c", "name": "f", "input": {"a": 1}}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        (None, {}),
        ({"a": 1}, {"a": 1}),
        ('{"a": ', '{"a": '),  # cut off by max_tokens: the raw text is kept
        ("[1]", "[1]"),  # not an object: kept as sent
    ],
)
def test_openai_response_tool_arguments(arguments: Any, expected: Any) -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]
    resp = codec("openai", "m").response(_completion({"content": None, "tool_calls": calls}, "length"), "m")
    assert resp["content"][-1]["input"] == expected


def test_openai_response_usage_reasoning_and_refusal() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
    msg = {"content": "hi", "reasoning_content": "think"}
    resp = codec("azure", "m").response(_completion(msg, "stop", usage), "m")
    assert resp["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "text", "text": "hi"},
    ]
    assert resp["usage"] == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    assert resp["type"] == "message" and resp["role"] == "assistant" and resp["model"] == "gpt-x"
    refusal = codec("openai", "m").response(_completion({"content": None, "refusal": "no"}, "stop"), "m")
    assert refusal["content"] == [{"type": "text", "text": "no"}] and refusal["stop_reason"] == "refusal"


@pytest.mark.parametrize(
    ("finish", "parts", "stop"),
    [
        ("STOP", [{"text": "a"}], "end_turn"),
        ("MAX_TOKENS", [{"text": "a"}], "max_tokens"),
        ("STOP", [{"functionCall": {"name": "f", "args": {"x": 1}}}], "tool_use"),
        ("SAFETY", [], "refusal"),
    ],
)
def test_gemini_response(finish: str, parts: list[dict[str, Any]], stop: str) -> None:
    resp = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "hm", "thought": True}, *parts]},
                "finishReason": finish,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 1,
            "cachedContentTokenCount": 3,
        },
        "modelVersion": "gemini-2.5-flash",
    }
    msg = codec("gemini", "g").response(resp, "g")
    assert msg["stop_reason"] == stop and msg["model"] == "gemini-2.5-flash"
    assert msg["content"][0] == {"type": "thinking", "thinking": "hm", "signature": ""}
    assert msg["usage"] == {
        "input_tokens": 2,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 3,
    }
    if stop == "tool_use":
        assert msg["content"][1]["input"] == {"x": 1} and msg["content"][1]["name"] == "f"


@pytest.mark.parametrize(
    ("reason", "stop"),
    [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("tool_use", "tool_use"),
        ("guardrail_intervened", "refusal"),
        ("content_filtered", "refusal"),
        ("model_context_window_exceeded", "model_context_window_exceeded"),
        ("malformed_model_output", "end_turn"),
    ],
)
def test_bedrock_response_stop_reasons(reason: str, stop: str) -> None:
    resp = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"reasoningContent": {"redactedContent": "R"}}, {"text": "x"}],
            }
        },
        "stopReason": reason,
        "additionalModelResponseFields": {"stop_sequence": "END"} if reason == "stop_sequence" else None,
        "usage": {"inputTokens": 5, "outputTokens": 2, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 1},
    }
    msg = codec("bedrock", "b").response(resp, "b")
    assert msg["stop_reason"] == stop
    assert msg["stop_sequence"] == ("END" if reason == "stop_sequence" else None)
    assert msg["content"] == [{"type": "redacted_thinking", "data": "R"}, {"type": "text", "text": "x"}]
    assert msg["usage"] == {
        "input_tokens": 5,
        "output_tokens": 2,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 4,
    }
    assert msg["id"].startswith("msg_") and msg["model"] == "b"


def test_anthropic_response_is_identity() -> None:
    resp = {"id": "msg_1", "type": "message", "content": [], "anything": 1}
    assert codec("anthropic", "c").response(resp, "c") is resp
    assert codec("vertex", "claude-x").response(resp, "claude-x") is resp


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "status", "body", "header", "type_", "message"),
    [
        (
            "anthropic",
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            None,
            "overloaded_error",
            "Overloaded",
        ),
        (
            "anthropic",
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
            None,
            "rate_limit_error",
            "slow down",
        ),
        ("anthropic", 413, b"<html>too big</html>", None, "request_too_large", "<html>too big</html>"),
        (
            "vertex",
            429,
            b'{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}',
            None,
            "rate_limit_error",
            "Quota exceeded",
        ),
        (
            "bedrock",
            429,
            b'{"message":"Too many requests"}',
            "ThrottlingException:http://internal.amazon.com/",
            "rate_limit_error",
            "Too many requests",
        ),
        (
            "bedrock",
            400,
            b'{"__type":"com.amazon#ValidationException","message":"bad"}',
            None,
            "invalid_request_error",
            "bad",
        ),
        ("bedrock", 403, b'{"Message":"denied"}', "AccessDeniedException", "permission_error", "denied"),
        ("bedrock", 503, b'{"message":"busy"}', "ServiceUnavailableException", "overloaded_error", "busy"),
        ("bedrock", 500, b"", None, "api_error", "upstream returned HTTP 500"),
        (
            "gemini",
            429,
            b'{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}',
            None,
            "rate_limit_error",
            "quota",
        ),
        (
            "gemini",
            400,
            b'[{"error":{"code":400,"message":"bad arg","status":"INVALID_ARGUMENT"}}]',
            None,
            "invalid_request_error",
            "bad arg",
        ),
        (
            "gemini",
            503,
            b'{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}',
            None,
            "overloaded_error",
            "overloaded",
        ),
        (
            "openai",
            429,
            b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}',
            None,
            "rate_limit_error",
            "Rate limit reached",
        ),
        (
            "openai",
            401,
            b'{"error":{"message":"bad key","type":"invalid_request_error"}}',
            None,
            "authentication_error",
            "bad key",
        ),
        (
            "azure",
            404,
            b'{"error":{"code":"DeploymentNotFound","message":"no deployment"}}',
            None,
            "not_found_error",
            "no deployment",
        ),
        ("openai", 500, b'{"error":{"message":"oops","type":"server_error"}}', None, "api_error", "oops"),
        ("openai", 502, b"Bad Gateway", None, "api_error", "Bad Gateway"),
    ],
)
def test_errors(kind: str, status: int, body: bytes, header: str | None, type_: str, message: str) -> None:
    got_status, err = codec(kind, "claude-x").error(status, body, header)
    assert got_status == status
    assert err == {"type": "error", "error": {"type": type_, "message": message}}


# ---------------------------------------------------------------- streams


def _run(kind: str, data: bytes, model: str = "m") -> tuple[dict[str, Any], bytes, Any]:
    """Feeds whole and at every byte; both outputs must match and be well formed."""
    stream = codec(kind, model).stream(model)
    out = feed(stream, data)
    split = feed(codec(kind, model).stream(model), data, every_byte(data))
    assert frames(split) == frames(out)
    view = stream_view(out.decode(), strict=True)
    assert view["events_after_end"] == 0
    assert view["ended"], "a stream must end in message_stop or error"
    return view, out, stream


def _sse(*objs: Any, newline: bytes = b"\n") -> bytes:
    return b"".join(
        b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + newline * 2 for o in objs
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


OPENAI_TOOL_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "let me "}),
    _chunk({"reasoning_content": "see"}),
    _chunk({"content": "Calling."}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
    _chunk(
        {
            "tool_calls": [
                {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]
        }
    ),
    _chunk({}, "tool_calls"),
    {
        "id": "c1",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}},
    },
    b"[DONE]",
]


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_openai_stream_tools_thinking_usage(kind: str) -> None:
    view, _, stream = _run(kind, _sse(*OPENAI_TOOL_STREAM))
    assert view["errors"] == []
    assert view["message"]["content"] == [
        {"type": "thinking", "thinking": "let me see", "signature": ""},
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "b", "name": "g", "input": {}},
    ]
    assert view["message"]["stop_reason"] == "tool_use"
    assert view["message"]["usage"] == {"input": 7, "output": 4, "cache_read": 2, "cache_write": 0}
    # The provider's counts, set from its usage chunk: prompt_tokens include the cached ones.
    assert stream.usage == Usage(input_tokens=9, output_tokens=4, cache_read_tokens=2)
    assert stream.response_model == "gpt-x"


@pytest.mark.parametrize(
    ("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")]
)
def test_openai_stream_finish_reasons(finish: str, stop: str) -> None:
    view, _, _ = _run("openai", _sse(_chunk({"content": "a"}), _chunk({}, finish), b"[DONE]"))
    assert view["message"]["stop_reason"] == stop
    assert view["message"]["content"] == [{"type": "text", "text": "a"}]


def test_openai_stream_mid_stream_error() -> None:
    err = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": None}}
    view, _, _ = _run("openai", _sse(_chunk({"content": "a"}), err, _chunk({"content": "b"})))
    assert view["errors"] == [{"type": "rate_limit_error", "message": "Rate limit reached"}]
    assert view["message"]["content"] == [{"type": "text", "text": "a"}]


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_openai_stream_truncated(cut: int) -> None:
    events = [
        _chunk({"content": "a"}),
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]}),
    ]
    view, _, _ = _run("openai", _sse(*events[:cut]) + b'data: {"id": "c1", "choi')
    assert view["errors"] == [{"type": "api_error", "message": "upstream stream ended early"}]


def test_openai_stream_without_done_after_finish_is_complete() -> None:
    view, _, _ = _run("openai", _sse(_chunk({"content": "a"}), _chunk({}, "stop")))
    assert view["errors"] == [] and view["message"]["stop_reason"] == "end_turn"


GEMINI_STREAM = [
    {
        "responseId": "r1",
        "modelVersion": "gemini-2.5-flash",
        "candidates": [
            {"index": 0, "content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}
        ],
    },
    {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "Hello"}]}}]},
    {
        "candidates": [
            {
                "index": 0,
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"id": "fc1", "name": "f", "args": {"x": [1, 2]}}}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 3, "thoughtsTokenCount": 2},
    },
]


@pytest.mark.parametrize("kind", ["gemini", "vertex"])
def test_gemini_stream_crlf_without_done(kind: str) -> None:
    view, _, stream = _run(kind, _sse(*GEMINI_STREAM, newline=b"\r\n"), "gemini-2.5-flash")
    assert view["errors"] == []
    msg = view["message"]
    assert msg["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "fc1", "name": "f", "input": {"x": [1, 2]}},
    ]
    assert msg["stop_reason"] == "tool_use" and msg["model"] == "gemini-2.5-flash"
    assert msg["usage"] == {"input": 6, "output": 5, "cache_read": 0, "cache_write": 0}
    assert stream.response_model == "gemini-2.5-flash"


def test_gemini_stream_max_tokens() -> None:
    last = {"candidates": [{"index": 0, "content": {"parts": [{"text": "!"}]}, "finishReason": "MAX_TOKENS"}]}
    view, _, _ = _run("gemini", _sse(GEMINI_STREAM[1], last, newline=b"\r\n"))
    assert view["message"]["stop_reason"] == "max_tokens"
    assert view["message"]["content"] == [{"type": "text", "text": "Hello!"}]


def test_gemini_stream_error_and_truncation() -> None:
    err = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    view, _, _ = _run("gemini", _sse(GEMINI_STREAM[1], err, newline=b"\r\n"))
    assert view["errors"] == [{"type": "rate_limit_error", "message": "quota"}]
    assert view["message"]["content"] == [{"type": "text", "text": "Hello"}]
    view, _, _ = _run("gemini", _sse(*GEMINI_STREAM[:2], newline=b"\r\n"))
    assert view["errors"] == [{"type": "api_error", "message": "upstream stream ended early"}]


def _bedrock(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(bedrock_event(kind, payload) for kind, payload in events)


BEDROCK_STREAM = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "SIG"}}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    (
        "contentBlockDelta",
        {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": "RED"}}},
    ),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "ok"}}),
    ("contentBlockStart", {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": '{"a"'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": ": 1}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 3}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 4, "outputTokens": 2, "cacheReadInputTokens": 1}}),
]


def test_bedrock_stream() -> None:
    view, _, stream = _run("bedrock", _bedrock(*BEDROCK_STREAM), "anthropic.claude")
    assert view["errors"] == []
    assert view["message"]["content"] == [
        {"type": "thinking", "thinking": "think", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "RED"},
        {"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
    ]
    assert view["message"]["stop_reason"] == "tool_use"
    assert view["message"]["usage"] == {"input": 4, "output": 2, "cache_read": 1, "cache_write": 0}
    # Bedrock's inputTokens exclude the cache; Usage counts all input.
    assert stream.usage == Usage(input_tokens=5, output_tokens=2, cache_read_tokens=1)
    assert stream.response_model is None  # Bedrock's events name no model


def test_bedrock_stream_exception_mid_stream() -> None:
    headers = {
        ":message-type": "exception",
        ":exception-type": "throttlingException",
        ":content-type": "application/json",
    }
    data = _bedrock(*BEDROCK_STREAM[:2]) + bedrock_message(headers, {"message": "Too many tokens"})
    view, _, _ = _run("bedrock", data + _bedrock(*BEDROCK_STREAM[2:]))
    assert view["errors"] == [{"type": "rate_limit_error", "message": "Too many tokens"}]
    assert view["message"]["content"] == [{"type": "thinking", "thinking": "think", "signature": ""}]


def test_bedrock_stream_truncated_corrupt_and_without_metadata() -> None:
    view, _, _ = _run("bedrock", _bedrock(*BEDROCK_STREAM[:6]))
    assert view["errors"] == [{"type": "api_error", "message": "upstream stream ended early"}]
    corrupt = bytearray(_bedrock(*BEDROCK_STREAM))
    corrupt[-3] ^= 0xFF
    view, _, _ = _run("bedrock", bytes(corrupt))
    assert view["errors"][0]["type"] == "api_error" and "event stream" in view["errors"][0]["message"]
    # messageStop without the metadata event: complete, with no usage to report.
    view, _, _ = _run("bedrock", _bedrock(*BEDROCK_STREAM[:-1]))
    assert view["errors"] == [] and view["message"]["stop_reason"] == "tool_use"


def _anthropic_sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


NATIVE = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    },
    {"type": "message_stop"},
]


@pytest.mark.parametrize(("kind", "model"), [("anthropic", "claude-x"), ("vertex", "claude-x")])
def test_native_stream_passes_through(kind: str, model: str) -> None:
    data = _anthropic_sse(*NATIVE)
    view, out, stream = _run(kind, data, model)
    assert out == data
    assert view["message"]["usage"] == {"input": 9, "output": 3, "cache_read": 0, "cache_write": 0}
    assert stream.usage == Usage(input_tokens=9, output_tokens=3) and stream.response_model == "claude-x"


def test_native_stream_overloaded_mid_stream_and_truncation() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    view, _, _ = _run("anthropic", _anthropic_sse(*NATIVE[:4], overloaded, *NATIVE[4:]))
    assert view["errors"] == [{"type": "overloaded_error", "message": "Overloaded"}]
    # Cut inside an event: the half event never goes out, an error event ends the stream.
    data = _anthropic_sse(*NATIVE[:4])
    view, out, _ = _run("anthropic", data + _anthropic_sse(NATIVE[4])[:-7])
    assert out.startswith(data)
    assert view["errors"] == [{"type": "api_error", "message": "upstream stream ended early"}]
    view, _, _ = _run(
        "anthropic", _anthropic_sse(*NATIVE[:2]) + b"event: content_block_delta\ndata: {oops\n\n"
    )
    assert view["errors"] == [{"type": "api_error", "message": "malformed upstream stream event"}]


# ---------------------------------------------------------------- robustness


def _mutated(kind: str, rng: random.Random) -> bytes:
    if kind == "openai":
        return _sse(*[e if isinstance(e, bytes) else mutate(e, rng) for e in OPENAI_TOOL_STREAM])
    if kind == "gemini":
        return _sse(*[mutate(e, rng) for e in GEMINI_STREAM], newline=b"\r\n")
    if kind == "bedrock":
        return _bedrock(*[(name, mutate(payload, rng)) for name, payload in BEDROCK_STREAM])
    return _anthropic_sse(*[mutate(e, rng) if i else e for i, e in enumerate(NATIVE)])


@pytest.mark.parametrize("kind", ["openai", "gemini", "bedrock", "anthropic"])
def test_wrong_shapes_end_well_formed(kind: str) -> None:
    """Upstream events with fields of the wrong type never raise and never leave a broken stream."""
    rng = random.Random(kind)
    for _ in range(150):
        out = feed(codec(kind, "claude-x").stream("claude-x"), _mutated(kind, rng))
        if kind == "anthropic":
            # Passthrough: events go out as the provider sent them, but the stream still ends.
            events = sse_events(out.decode())
            assert events[-1][1].get("type") in ("message_stop", "error")
            continue
        view = stream_view(out.decode(), strict=True)
        assert view["ended"] and view["events_after_end"] == 0


def test_anthropic_error_passes_through_whole() -> None:
    body = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_1",
    }
    assert codec("anthropic", "c").error(529, json.dumps(body).encode()) == (529, body)


# ---------------------------------------------------------------- the real client


def _sdk_client(status: int, body: bytes, content_type: str) -> Any:
    import anthropic
    import httpx2  # the HTTP client this anthropic SDK is built on

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": content_type}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", http_client=http, max_retries=0)


def _sdk_stream(out: bytes) -> Any:
    client = _sdk_client(200, out, "text/event-stream")
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        return s.get_final_message()


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("openai", _sse(*OPENAI_TOOL_STREAM)),
        ("gemini", _sse(*GEMINI_STREAM, newline=b"\r\n")),
        ("bedrock", _bedrock(*BEDROCK_STREAM)),
        ("anthropic", _anthropic_sse(*NATIVE)),
    ],
)
def test_anthropic_sdk_accumulates_our_streams(kind: str, data: bytes) -> None:
    view, out, _ = _run(kind, data, "claude-x")
    message = _sdk_stream(out)
    assert [b.model_dump(exclude_none=True) for b in message.content] == view["message"]["content"]
    assert message.stop_reason == view["message"]["stop_reason"]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        view["message"]["usage"]["input"],
        view["message"]["usage"]["output"],
    )


def test_anthropic_sdk_raises_our_stream_errors() -> None:
    import anthropic

    err = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": None}}
    _, out, _ = _run("openai", _sse(_chunk({"content": "a"}), err))
    with pytest.raises(anthropic.APIStatusError, match="Rate limit reached"):
        _sdk_stream(out)


def test_anthropic_sdk_reads_our_responses_and_errors() -> None:
    import anthropic

    resp = codec("bedrock", "b").response(
        {
            "output": {"message": {"content": [{"text": "x"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 1},
        },
        "b",
    )
    client = _sdk_client(200, json.dumps(resp).encode(), "application/json")
    message = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "x" and message.stop_reason == "end_turn"
    status, err = codec("bedrock", "b").error(429, b'{"message":"slow"}', "ThrottlingException")
    client = _sdk_client(status, json.dumps(err).encode(), "application/json")
    with pytest.raises(anthropic.RateLimitError, match="slow"):
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_request_shapes_are_translation_errors(kind: str) -> None:
    """A client request with a field of the wrong type is a 400 (TranslationError), never a crash."""
    from .conformance_util import corpus_dir

    reqs = [
        json.loads(p.read_text()) for p in sorted((corpus_dir() / "requests" / "messages").glob("*.json"))
    ]
    rng = random.Random(kind)
    for _ in range(400):
        req = mutate(mutate(rng.choice(reqs), rng), rng)
        try:
            codec(kind, "claude-x" if kind == "vertex" else "gpt-5.6").request(req, "model")
        except TranslationError as exc:
            assert exc.param
