"""Anthropic Messages (the client's format) <-> OpenAI chat.completions (the provider's).

Also the middle step for Gemini: a Messages request becomes a chat request that
``gemini.chat_request`` takes, and Gemini's answer comes back through
``gemini.chat_response`` / ``gemini.ChatStream`` as a chat completion or chunks,
which ``message_response`` / ``ChunkEvents`` turn into Messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from . import common as c
from . import messages_common as m
from .base import Json, TranslationError
from .fields import MESSAGES_IGNORED, NO_NOOP, FieldTable
from .sse import SSEEvent, SSETranslator
from .usage import Usage, from_openai

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

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


def field_object(req: Json, key: str) -> Json:
    """An optional object field of the request; {} when absent."""
    value = req.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TranslationError(f"{key} must be an object", key)
    return value


def field_list(req: Json, key: str) -> list[Any]:
    """An optional list field of the request; [] when absent."""
    value = req.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranslationError(f"{key} must be a list", key)
    return value


def output_format(req: Json) -> Json | None:
    """The structured-output format: ``output_config.format``, or the older top-level ``output_format``."""
    fmt = field_object(req, "output_config").get("format")
    if fmt is None and isinstance(req.get("output_format"), dict):
        fmt = req["output_format"]
    if fmt is None:
        return None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(fmt.get("schema"), dict)
    ):
        raise TranslationError(
            "output format must be {'type': 'json_schema', 'schema': {...}}", "output_config"
        )
    return fmt


def thinking_kind(req: Json) -> str | None:
    thinking = req.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    return kind if kind in ("enabled", "adaptive") else None


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


def content_blocks(content: Any, param: str = "messages") -> list[Json]:
    """Message content as a list of blocks (a plain string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise TranslationError("content must be a string or a list of content blocks", param)


def block_source(block: Json) -> Json:
    """An image or document block's ``source``; {} when absent (then its kind is unsupported)."""
    src = block.get("source")
    if src is None:
        return {}
    if not isinstance(src, dict):
        raise TranslationError(f"{block.get('type')} blocks need a source object", "messages")
    return src


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
    part: Json = {"type": "text", "text": _block_text(block)}
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
            parts.append({"type": "text", "text": _block_text(item)})
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


def _block_text(block: Json) -> str:
    text = block.get("text")
    if text is None or isinstance(text, str):
        return text or ""
    raise TranslationError("text blocks need a string text", "messages")


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


def input_schema(tool: Json) -> Json:
    schema = tool.get("input_schema")
    if schema is None:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise TranslationError("a tool's input_schema must be an object", "tools")
    return schema


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


# ---------------------------------------------------------------- response


def message_usage(u: Any) -> Json:
    """OpenAI usage as Anthropic's: prompt_tokens include cache reads and writes, input_tokens don't."""
    return (from_openai(u, billed_total=False) or Usage()).anthropic()


def stop_reason(finish: Any, has_tools: bool) -> str:
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    # Some compatible servers finish tool calls with "stop".
    return "tool_use" if reason == "end_turn" and has_tools else reason


def message_response(resp: Json, model: str) -> Json:
    """A ``chat.completion`` as a Messages response (first choice; we never ask for more)."""
    choices = resp.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[Json] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        # Unsigned: our Anthropic and Bedrock request translators drop it on replay.
        signature = msg.get("reasoning_signature") or ""
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    text = _text(msg.get("content"))
    refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) else None
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = msg.get("tool_calls") or []
    for call in calls:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or c.new_id("toolu_"),
                "name": fn.get("name") or "",
                "input": _tool_input(fn.get("arguments")),
            }
        )
    stop = stop_reason(choice.get("finish_reason"), bool(calls))
    if refusal and not text and stop == "end_turn":
        stop = "refusal"
    id_ = resp.get("id") or c.new_id("msg_")
    return m.message(id_, resp.get("model") or model, content, stop, None, message_usage(resp.get("usage")))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some compatible servers answer with parts
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _tool_input(arguments: Any) -> Any:
    """Arguments as an object; a call cut off by max_tokens keeps its raw text, as the peer does."""
    try:
        return c.parse_arguments(arguments)
    except (TranslationError, TypeError):
        return arguments


# ---------------------------------------------------------------- stream


class ChunkEvents(SSETranslator):
    """OpenAI ``chat.completion.chunk`` SSE -> Anthropic Messages SSE events.

    ``message_delta`` waits for ``[DONE]`` because the usage chunk (asked for with
    ``include_usage``) comes after the finish reason. ``usage`` is the provider's last
    reported total and ``response_model`` the model its chunks name (None until then).
    """

    def __init__(self, model: str) -> None:
        super().__init__()
        self.response_model: str | None = None
        self._out = m.EventWriter(c.new_id("msg_"), model)
        self._tools: set[int] = set()
        self._finish: str | None = None
        self._refusal = False
        self._usage: Json | None = None

    @property
    def usage(self) -> Usage | None:
        return from_openai(self._usage)

    @property
    def closed(self) -> bool:
        return self._out.done

    def _ended(self) -> bytes:
        if self._finish is None:
            return self._out.error("api_error", m.TRUNCATED)
        return self._guarded(self._end)  # a finish reason but no [DONE]: complete enough

    def _events(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if self._out.done:
                break
            if event.data.strip() == b"[DONE]":
                out += self._guarded(self._end)
                continue
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue  # not JSON (keep-alives): nothing to translate
            if isinstance(data, dict):
                out += self._guarded(lambda data=data: self._chunk(data))
        return bytes(out)

    def _guarded(self, step: Callable[[], bytes]) -> bytes:
        try:
            return step()
        except (AttributeError, TypeError, KeyError, ValueError):
            return self._out.error("api_error", m.MALFORMED)  # a field of the wrong shape

    def _chunk(self, data: Json) -> bytes:
        err = data.get("error")
        if err:
            if isinstance(err, dict):
                return self._out.error(m.stream_error_type(err), str(err.get("message") or "upstream error"))
            return self._out.error("api_error", str(err))
        if not self._out.started:
            if data.get("id"):
                self._out.id = str(data["id"])
            if isinstance(data.get("model"), str) and data["model"]:
                self.response_model = self._out.model = data["model"]
        out = bytearray(self._out.start())
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # we never ask for more than one choice
            out += self._delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                out += self._out.close()
        return bytes(out)

    def _delta(self, delta: Json) -> bytes:
        out = bytearray()
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._out.ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._out.delta({"type": "thinking_delta", "thinking": reasoning})
        signature = delta.get("reasoning_signature")
        if isinstance(signature, str) and signature:
            out += self._out.ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._out.delta({"type": "signature_delta", "signature": signature})
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self._refusal = self._refusal or key == "refusal"
                out += self._out.ensure("text", {"type": "text", "text": ""})
                out += self._out.delta({"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            out += self._tool(call)
        return bytes(out)

    def _tool(self, call: Json) -> bytes:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if not isinstance(index, int):
            raise TypeError("tool call index must be an integer")
        key = ("tool", index)
        out = b""
        if index not in self._tools:
            self._tools.add(index)
            block = {
                "type": "tool_use",
                "id": m.text(call.get("id")) or c.new_id("toolu_"),
                "name": m.text(fn.get("name")),
            }
            out = self._out.open(key, {**block, "input": {}})
        args = fn.get("arguments")
        args = c.dumps_str(args) if isinstance(args, dict) else m.text(args)
        if not args:
            return out
        if self._out.key != key:
            # Anthropic blocks cannot be reopened; OpenAI never interleaves calls.
            raise ValueError("tool call arguments after the call's block was closed")
        return out + self._out.delta({"type": "input_json_delta", "partial_json": args})

    def _end(self) -> bytes:
        stop = stop_reason(self._finish, bool(self._tools))
        if self._refusal and stop == "end_turn":
            stop = "refusal"
        return self._out.finish(stop, None, message_usage(self._usage))
