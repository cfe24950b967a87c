"""OpenAI chat.completions <-> Anthropic Messages (also Claude on Vertex): the request.

The answer is read in ``anthropic_response`` (bodies and errors) and ``anthropic_stream``
(SSE); their public names are importable from here too.
"""

from __future__ import annotations

from typing import Any

from . import common as c
from .anthropic_response import ERROR_STATUS, FINISH_REASONS, chat_response, error_response
from .anthropic_stream import AnthropicStreamObserver, ChatStream
from .base import Json, TranslationError
from .fields import CHAT_IGNORED, CHAT_OPENAI_ONLY, NO_NOOP, FieldTable

__all__ = [
    "ERROR_STATUS",
    "FINISH_REASONS",
    "REQUEST_FIELDS",
    "VERTEX_ANTHROPIC_VERSION",
    "AnthropicStreamObserver",
    "ChatStream",
    "chat_request",
    "chat_response",
    "error_response",
    "vertex_chat_request",
]

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"

# json_object has no schema; any JSON object is the closest structured-output format.
_ANY_OBJECT_SCHEMA: Json = {"type": "object", "additionalProperties": True}

# The chat.completions fields carried to Messages, dropped (see CHAT_IGNORED for why),
# or refused unless they hold their no-op value (see fields.py).
REQUEST_FIELDS = FieldTable(
    provider="Anthropic",
    mapped=frozenset(
        {
            "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
            "top_k",  # not OpenAI's, but a common extension, and Anthropic has it
            "stop", "stream", "tools", "tool_choice", "parallel_tool_calls", "response_format",
            "reasoning_effort",
            "user",  # -> metadata.user_id
            "n",  # 1 only (reject_n)
        }
    ),
    ignored=CHAT_IGNORED,
    unsupported={
        **CHAT_OPENAI_ONLY,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "seed": NO_NOOP,
    },
)  # fmt: skip


# ---------------------------------------------------------------- request


def chat_request(req: Json, model: str) -> Json:
    body = _messages_body(req)
    body["model"] = model
    return body


def vertex_chat_request(req: Json, model: str) -> Json:
    """Claude on Vertex: the model is in the URL and the version in the body."""
    body = _messages_body(req)
    body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
    return body


def _messages_body(req: Json) -> Json:
    REQUEST_FIELDS.check(req)
    c.reject_n(req)
    system, messages = _convert_messages(req.get("messages") or [])
    limit = c.max_tokens(req) or c.DEFAULT_MAX_TOKENS
    body: Json = {"messages": messages, "max_tokens": limit}
    if system:
        # One system text stays a string; several keep their boundaries as blocks.
        body["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": s} for s in system]
    for key in ("temperature", "top_p", "top_k"):
        if req.get(key) is not None:
            body[key] = req[key]
    stop = c.stop_sequences(req)
    if stop:
        body["stop_sequences"] = stop
    if req.get("stream"):
        body["stream"] = True
    _add_tools(req, body)
    if isinstance(req.get("user"), str):
        body["metadata"] = {"user_id": req["user"]}
    _add_output_format(req, body)
    budget = c.reasoning_budget(req)
    if budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": c.capped_budget(budget, limit)}
    return body


def _convert_messages(messages: list[Json]) -> tuple[list[str], list[Json]]:
    system: list[str] = []
    turns: list[Json] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(c.text_content(msg.get("content")))
        elif role == "user":
            c.append_turn(turns, "user", _user_blocks(msg.get("content")), "content")
        elif role == "assistant":
            c.append_turn(turns, "assistant", _assistant_blocks(msg), "content")
        elif role == "tool":
            c.append_turn(turns, "user", [_tool_result(msg)], "content")
        else:
            raise TranslationError(f"unsupported message role {role!r}", "messages")
    return system, turns


def _user_blocks(content: Any) -> list[Json]:
    blocks: list[Json] = []
    for part in c.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(c.image_url(part)))
        elif kind == "file":
            mime, data, _ = c.file_data(part)
            blocks.append(
                {"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}}
            )
        else:
            raise TranslationError(f"content part {kind!r} is not supported by Anthropic", "messages")
    return blocks


def _image_block(url: str) -> Json:
    inline = c.parse_data_url(url)
    if inline:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(msg: Json) -> list[Json]:
    blocks: list[Json] = []
    # Signed reasoning from an earlier turn goes back as a thinking block; unsigned
    # reasoning cannot be verified by Anthropic, so it is dropped.
    if msg.get("reasoning_content") and msg.get("reasoning_signature"):
        blocks.append(
            {
                "type": "thinking",
                "thinking": msg["reasoning_content"],
                "signature": msg["reasoning_signature"],
            }
        )
    text = c.text_content(msg.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": c.parse_arguments(fn.get("arguments")),
            }
        )
    return blocks


def _tool_result(msg: Json) -> Json:
    content = msg.get("content")
    result: Json = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
    result["content"] = content if isinstance(content, str) else _user_blocks(content)
    return result


def _add_tools(req: Json, body: Json) -> None:
    functions = c.function_tools(req)
    if functions:
        body["tools"] = [_tool(fn) for fn in functions]
    choice = c.tool_choice(req)
    tc: Json | None = None
    if choice is not None:
        mode, name = choice
        tc = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}.get(mode)
        if tc is None:
            tc = {"type": "tool", "name": name}
    if req.get("parallel_tool_calls") is False and functions:
        tc = tc or {"type": "auto"}
        if tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
    if tc is not None:
        body["tool_choice"] = tc


def _tool(fn: Json) -> Json:
    tool: Json = {"name": fn.get("name")}
    if fn.get("description"):
        tool["description"] = fn["description"]
    tool["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return tool


def _add_output_format(req: Json, body: Json) -> None:
    fmt = c.response_format(req)
    if fmt is None:
        return
    kind, spec = fmt
    schema = _ANY_OBJECT_SCHEMA if kind == "json_object" else (spec or {}).get("schema") or _ANY_OBJECT_SCHEMA
    body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
