"""Dialect-neutral view of a chat request and the deterministic reply the mock derives from it.

Each provider's request body is reduced to a :class:`Conversation`; :func:`plan_reply` turns that into a
:class:`Reply` which the per-provider builders in ``formats`` serialise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON = dict[str, Any]

ECHO_LIMIT = 200
_MAX_SCHEMA_DEPTH = 8
_WORD_SPLIT = re.compile(r"(?<=\s)(?=\S)")


@dataclass(slots=True)
class Tool:
    name: str
    schema: JSON


@dataclass(slots=True)
class Conversation:
    model: str = ""
    texts: list[str] = field(default_factory=list)  # every text in the request, for input token counts
    last_user_text: str = ""
    images: int = 0
    tools: list[Tool] = field(default_factory=list)
    tool_mode: str = "auto"  # auto | none | required | named
    tool_name: str | None = None
    parallel: bool = True
    last_is_user: bool = False  # last message is a plain user turn (not tool results)
    tool_result: str | None = None  # text of trailing tool results, when the last turn carries them
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False

    def add_text(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self.texts.append(text)


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    args: JSON
    arguments: str  # the same args as a compact JSON string


@dataclass(slots=True)
class Reply:
    id: str
    text: str
    tool_calls: list[ToolCall]
    stop: str  # "stop" | "length" | "tool"
    input_tokens: int
    output_tokens: int
    pieces: list[str] | None = None  # the streamed text deltas, when a test chose them

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def word_count(text: str) -> int:
    return len(text.split())


def text_pieces(text: str, words_per_piece: int = 3) -> list[str]:
    """Split text into streaming deltas at word boundaries; ``"".join`` restores it exactly."""
    words = _WORD_SPLIT.split(text)
    pieces = ["".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)]
    return [p for p in pieces if p] or [""]


def pieces_of(reply: Reply) -> list[str]:
    """The text deltas a stream sends: those a test chose (``x-mock-reply-pieces``), else by words."""
    return list(reply.pieces) if reply.pieces else text_pieces(reply.text)


def json_pieces(arguments: str) -> list[str]:
    """Split a JSON string into two awkward fragments, as real providers stream tool arguments."""
    if len(arguments) < 4:
        return [arguments]
    cut = len(arguments) // 2 + 1
    return [arguments[:cut], arguments[cut:]]


def value_from_schema(schema: Any, depth: int = 0) -> Any:
    """Build a value that satisfies a (simple) JSON schema: string "mock", numbers 1, bools true."""
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return "mock"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return value_from_schema(_first_non_null(options), depth + 1)
    kind = _schema_type(schema)
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: value_from_schema(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [value_from_schema(schema.get("items"), depth + 1)]
    return _SCALARS.get(kind, "mock")


_SCALARS: dict[str, Any] = {"string": "mock", "number": 1, "integer": 1, "boolean": True, "null": None}


def _first_non_null(options: list[Any]) -> Any:
    for option in options:
        if not (isinstance(option, dict) and _schema_type(option) == "null"):
            return option
    return options[0]


def _schema_type(schema: JSON) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()  # Gemini schemas use upper-case OpenAPI types
    return "object" if "properties" in schema else "string"


def _chosen_tools(conv: Conversation) -> list[Tool]:
    if conv.tool_mode == "named":
        named = [t for t in conv.tools if t.name == conv.tool_name]
        return named or conv.tools[:1]
    if conv.parallel and len(conv.tools) >= 2:
        return conv.tools[:2]
    return conv.tools[:1]


def wants_tool_call(conv: Conversation) -> bool:
    return bool(conv.tools) and conv.last_is_user and conv.tool_mode != "none"


def reply_text(conv: Conversation, label: str) -> str:
    if conv.tool_result is not None:
        text = f"Tool said: {conv.tool_result}"
    else:
        text = f"Hello from mock {label} ({conv.model}): {conv.last_user_text[:ECHO_LIMIT]}"
    if conv.images:
        text += f" (saw {conv.images} image{'' if conv.images == 1 else 's'})"
    return text


def plan_reply(conv: Conversation, label: str, reply_id: str, call_prefix: str) -> Reply:
    """Decide the deterministic reply (tool calls or text) and its token usage.

    Tool-call ids are ``<call_prefix>_<i>``.
    """
    input_tokens = max(1, sum(word_count(t) for t in conv.texts))
    if wants_tool_call(conv):
        calls = [_tool_call(f"{call_prefix}_{i}", tool) for i, tool in enumerate(_chosen_tools(conv))]
        out = max(1, sum(word_count(c.name) + word_count(c.arguments) for c in calls))
        return Reply(reply_id, "", calls, "tool", input_tokens, out)
    text = reply_text(conv, label)
    stop = "stop"
    out = max(1, word_count(text))
    if conv.max_tokens is not None and 0 < conv.max_tokens < out:
        # Honour the output limit so tests can exercise length/max_tokens stop reasons.
        text = "".join(_WORD_SPLIT.split(text)[: conv.max_tokens]).rstrip()
        stop, out = "length", conv.max_tokens
    return Reply(reply_id, text, [], stop, input_tokens, out)


def _tool_call(call_id: str, tool: Tool) -> ToolCall:
    args = value_from_schema(tool.schema or {"type": "object"})
    if not isinstance(args, dict):
        args = {}
    return ToolCall(call_id, tool.name, args, orjson.dumps(args).decode())
