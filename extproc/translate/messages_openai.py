"""Anthropic Messages (the client's format) <-> OpenAI chat.completions (the provider's): the request.

Also the middle step for Gemini: a Messages request becomes a chat request that
``gemini.chat_request`` takes, and Gemini's answer comes back through
``gemini.chat_response`` / ``gemini.ChatStream`` as a chat completion or chunks,
which ``message_response`` / ``ChunkEvents`` turn into Messages.

The answer is read in ``messages_openai_response`` (bodies) and ``messages_openai_stream``
(chunks); the readers of the client's request fields are in ``messages_request``. Their
public names are importable from here too.
"""

from __future__ import annotations

import re
from typing import Any

from . import common as c
from .base import Json, TranslationError
from .fields import MESSAGES_IGNORED, NO_NOOP, FieldTable
from .messages_openai_response import STOP_REASONS, message_response, message_usage, stop_reason
from .messages_openai_stream import ChunkEvents
from .messages_request import (
    block_source,
    block_text,
    content_blocks,
    field_list,
    field_object,
    input_schema,
    output_format,
    thinking_kind,
)

__all__ = [
    "REQUEST_FIELDS",
    "STOP_REASONS",
    "ChunkEvents",
    "block_source",
    "budget_effort",
    "chat_request",
    "content_blocks",
    "field_list",
    "field_object",
    "input_schema",
    "message_response",
    "message_usage",
    "output_format",
    "stop_reason",
    "thinking_kind",
]

# Anthropic's output_config.effort as OpenAI's reasoning_effort.
_EFFORTS: dict[str, str] = {"low": "low", "medium": "medium", "high": "high", "max": "xhigh"}

# GPT-5.6 and later take explicit prompt cache breakpoints on text parts; older
# models and other OpenAI-compatible servers reject the unknown field.
_CACHE_BREAKPOINT_MODELS = re.compile(r"(?:^|/)gpt-(?:5\.(?:[6-9]|\d{2,})|[6-9])")
# GPT-5.2 and later reject function tools together with any reasoning effort but
# "none" on /v1/chat/completions (even the server-side default), so tool turns
# must say "none" explicitly.
_NO_REASONING_WITH_TOOLS = re.compile(r"(?:^|/)gpt-(?:5\.(?:[2-9]|\d{2,})|[6-9])")
_BREAKPOINT: Json = {"mode": "explicit"}

# The Messages fields carried to chat.completions, dropped (see MESSAGES_IGNORED for
# why), or refused (see fields.py).
REQUEST_FIELDS = FieldTable(
    provider="OpenAI",
    mapped=frozenset(
        {
            "model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
            "top_p", "tools", "tool_choice", "output_format",
            "metadata",  # user_id -> user
            "thinking", "output_config",  # -> reasoning_effort, response_format
        }
    ),
    ignored=MESSAGES_IGNORED,
    unsupported={
        "top_k": NO_NOOP,  # chat.completions has no top-k sampling
        "container": NO_NOOP,  # code execution and skills run at Anthropic only
        "mcp_servers": NO_NOOP,  # Anthropic's MCP connector calls the servers itself
        "inference_geo": NO_NOOP,  # data residency: a promise the gateway cannot keep elsewhere
    },
)  # fmt: skip


# ---------------------------------------------------------------- request


def chat_request(
    req: Json, model: str, *, keep_top_k: bool = False, fields: FieldTable | None = None
) -> Json:
    """The chat.completions body for a Messages request.

    ``keep_top_k`` keeps Anthropic's ``top_k`` (Gemini reads it; OpenAI has none).
    ``fields`` is the table of the provider the body is for (OpenAI's by default).
    """
    (fields or REQUEST_FIELDS).check(req)
    breakpoints = bool(_CACHE_BREAKPOINT_MODELS.search(model))
    body: Json = {"model": model, "messages": _messages(req, breakpoints)}
    if req.get("max_tokens") is not None:
        body["max_completion_tokens"] = req["max_tokens"]
    stream = bool(req.get("stream"))
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}  # usage for the final message_delta
    for key in ("temperature", "top_p", "top_k") if keep_top_k else ("temperature", "top_p"):
        if req.get(key) is not None:
            body[key] = req[key]
    stops = field_list(req, "stop_sequences")
    if stops:
        body["stop"] = stops
    user = field_object(req, "metadata").get("user_id")
    if isinstance(user, str) and user:
        body["user"] = user
    _add_tools(req, body)
    fmt = output_format(req)
    if fmt is not None:
        schema = fmt["schema"]
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "structured_output", "schema": schema},
        }
    effort = _reasoning_effort(req, model, bool(body.get("tools")))
    if effort:
        body["reasoning_effort"] = effort
    return body


def _reasoning_effort(req: Json, model: str, has_tools: bool) -> str | None:
    if has_tools and _NO_REASONING_WITH_TOOLS.search(model):
        return "none"
    kind = thinking_kind(req)
    if kind is None:
        return None
    effort = field_object(req, "output_config").get("effort")
    if isinstance(effort, str) and effort:
        return _EFFORTS.get(effort, effort)
    if kind == "enabled":
        return budget_effort(req["thinking"].get("budget_tokens"))
    return None  # adaptive without an effort: the model's own default


def budget_effort(budget: Any) -> str:
    """A thinking budget as the nearest effort (Claude Code asks for 4k, 10k or 32k)."""
    if not isinstance(budget, int) or budget < 4096:
        return "low"
    return "medium" if budget < 16384 else "high"


def _messages(req: Json, breakpoints: bool) -> list[Json]:
    out: list[Json] = []
    system = req.get("system")
    if system:
        out.append({"role": "system", "content": _text_parts(system, breakpoints, "system")})
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", "messages")
    for msg in messages:
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "user":
            out.extend(_user(msg.get("content"), breakpoints))
        elif role == "assistant":
            assistant = _assistant(msg.get("content"), breakpoints)
            if assistant is not None:
                out.append(assistant)
        elif role == "system":  # some clients put system turns in messages; keep them in place
            out.append(
                {"role": "system", "content": _text_parts(msg.get("content"), breakpoints, "messages")}
            )
        else:
            raise TranslationError(f"unsupported message role {role!r}", "messages")
    return out


def _text_part(block: Json, breakpoints: bool) -> Json:
    part: Json = {"type": "text", "text": block_text(block)}
    if breakpoints and block.get("cache_control"):
        part["prompt_cache_breakpoint"] = dict(_BREAKPOINT)
    return part


def _text_parts(content: Any, breakpoints: bool, param: str) -> list[Json]:
    parts = []
    for block in content_blocks(content, param):
        if block.get("type") != "text":
            raise TranslationError(f"{block.get('type')!r} blocks are not allowed in system content", param)
        parts.append(_text_part(block, breakpoints))
    return parts


def _user(content: Any, breakpoints: bool) -> list[Json]:
    """A user turn: its tool results as ``tool`` messages first, then the rest as one user message."""
    tool_messages: list[Json] = []
    moved: list[Json] = []  # images from tool results: tool messages carry text only
    parts: list[Json] = []
    for block in content_blocks(content):
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(_tool_message(block, breakpoints, moved))
        elif kind == "text":
            parts.append(_text_part(block, breakpoints))
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "document":
            parts.extend(_document_parts(block))
        else:
            raise TranslationError(f"content block {kind!r} is not supported by this provider", "messages")
    rest = moved + parts
    return tool_messages + ([{"role": "user", "content": rest}] if rest else [])


def _tool_message(block: Json, breakpoints: bool, moved: list[Json]) -> Json:
    content = block.get("content")
    marked = bool(block.get("cache_control"))
    parts: list[Json] = []
    for item in content_blocks(content) if content is not None else ():
        kind = item.get("type")
        marked = marked or bool(item.get("cache_control"))
        if kind == "text":
            parts.append({"type": "text", "text": block_text(item)})
        elif kind == "image":
            moved.append(_image_part(item))
        elif kind == "document":
            for part in _document_parts(item):
                (parts if part["type"] == "text" else moved).append(part)
        else:
            raise TranslationError(
                f"tool_result block {kind!r} is not supported by this provider", "messages"
            )
    if not parts:
        parts.append({"type": "text", "text": ""})
    # is_error has no chat.completions field: the result text (clients phrase it as an
    # error) goes as is.
    if breakpoints and marked:
        # Only text parts take a breakpoint here; the last one covers the whole result.
        parts[-1]["prompt_cache_breakpoint"] = dict(_BREAKPOINT)
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": parts}


def _image_part(block: Json) -> Json:
    src = block_source(block)
    kind = src.get("type")
    if kind == "base64":
        url = f"data:{src.get('media_type') or 'image/png'};base64,{src.get('data') or ''}"
    elif kind == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise TranslationError(f"image source {kind!r} is not supported by this provider", "messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_parts(block: Json) -> list[Json]:
    src = block_source(block)
    kind = src.get("type")
    if kind == "base64":
        mime = src.get("media_type") or "application/pdf"
        file = {
            "filename": block.get("title") or "document",
            "file_data": f"data:{mime};base64,{src.get('data')}",
        }
        return [{"type": "file", "file": file}]
    if kind == "text":
        return [{"type": "text", "text": src.get("data") or ""}]
    if kind == "content":
        return [
            _text_part(b, False) if b.get("type") == "text" else _image_part(b)
            for b in content_blocks(src["content"])
        ]
    raise TranslationError(f"document source {kind!r} is not supported by this provider", "messages")


def _assistant(content: Any, breakpoints: bool) -> Json | None:
    parts: list[Json] = []
    calls: list[Json] = []
    for block in content_blocks(content):
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block, breakpoints))
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # chat.completions takes no reasoning back; the model does without it
        else:
            raise TranslationError(f"content block {kind!r} is not supported by this provider", "messages")
    if not parts and not calls:
        return None
    msg: Json = {"role": "assistant"}
    if parts:
        msg["content"] = parts
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_call(block: Json) -> Json:
    args = block.get("input")
    arguments = args if isinstance(args, str) else c.dumps_str(args if args is not None else {})
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def _add_tools(req: Json, body: Json) -> None:
    functions: list[Json] = []
    for tool in field_list(req, "tools"):
        if not isinstance(tool, dict):
            raise TranslationError("tools must be objects", "tools")
        if tool.get("type") not in (None, "custom"):
            continue  # Anthropic's server tools (web search, code execution...) run at Anthropic only
        fn: Json = {"name": tool.get("name")}
        if tool.get("description"):
            fn["description"] = tool["description"]
        fn["parameters"] = input_schema(tool)
        if tool.get("strict") is not None:
            fn["strict"] = tool["strict"]
        functions.append({"type": "function", "function": fn})
    if not functions:
        return  # OpenAI rejects tool_choice and parallel_tool_calls without tools
    body["tools"] = functions
    choice = req.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be an object", "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "any", "none"):
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise TranslationError(f"unsupported tool_choice type {kind!r}", "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        body["parallel_tool_calls"] = False
