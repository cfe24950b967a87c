"""OpenAI chat.completions <-> Anthropic Messages (also Claude on Vertex)."""

from __future__ import annotations

from typing import Any

import orjson

from . import common as c
from .base import Json, TranslationError, openai_error, openai_error_type
from .fields import CHAT_IGNORED, CHAT_OPENAI_ONLY, NO_NOOP, FieldTable
from .sse import DONE, SSEDecoder, SSEEvent, SSETranslator, error_frame, malformed_frames
from .usage import Usage, from_anthropic, set_counters

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types and the HTTP status Anthropic answers them with.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

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


# ---------------------------------------------------------------- response


def chat_response(resp: Json, model: str, *, created: int = 0) -> Json:
    texts: list[str] = []
    reasoning: list[str] = []
    signature: str | None = None
    calls: list[Json] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            signature = block.get("signature") or signature
        elif kind == "tool_use":
            calls.append(
                c.tool_call(block.get("id") or c.new_id("call_"), block.get("name"), block.get("input"))
            )
    finish = FINISH_REASONS.get(resp.get("stop_reason") or "", "stop")
    text = "".join(texts) if texts else None
    ch = c.choice(0, text, calls, finish, "".join(reasoning) if reasoning else None, signature)
    usage = _usage(resp.get("usage") or {})
    return c.completion(resp.get("id") or c.new_id(), resp.get("model") or model, created, [ch], usage)


def _usage(u: Any) -> Json:
    # Anthropic's input_tokens exclude cache reads and writes; OpenAI's prompt_tokens include them.
    usage = from_anthropic(u) or Usage()
    wrote = isinstance(u, dict) and u.get("cache_creation_input_tokens") is not None
    write = usage.cache_write_tokens if wrote else None
    return c.make_usage(
        usage.input_tokens, usage.output_tokens, cached=usage.cache_read_tokens, cache_write=write
    )


def error_response(status: int, body: bytes) -> tuple[int, Json]:
    parsed = c.load_json(body)
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return status, openai_error(str(err["message"]), openai_error_type(status), err.get("type"))
    return status, openai_error(c.body_text(status, body), openai_error_type(status))


# ---------------------------------------------------------------- stream


class ChatStream(SSETranslator):
    """Anthropic Messages SSE -> OpenAI chat.completion.chunk SSE.

    ``usage`` and ``response_model`` are what the provider's events said so far (None
    before they say anything): input counts from ``message_start``, the final output
    count from ``message_delta``.
    """

    def __init__(self, model: str, include_usage: bool, created: int = 0) -> None:
        super().__init__()
        self.response_model: str | None = None
        self._out = c.ChunkWriter(c.new_id(), model, created, include_usage)
        self._usage: Json = {}
        self._tools: dict[int, list[Any]] = {}  # block index -> [tool index, args sent, start input]
        self._finished = False  # a stop reason was sent
        self._done = False  # [DONE] was sent

    @property
    def usage(self) -> Usage | None:
        return from_anthropic(self._usage) if self._usage else None

    @property
    def closed(self) -> bool:
        return self._done

    def _ended(self) -> bytes:
        if not self._finished:
            self._done = True
            return error_frame("upstream stream ended early", "server_error", "stream_truncated") + DONE
        return self._end()

    def _events(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if self._done:
                break
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue  # not JSON: nothing we can translate
            if not isinstance(data, dict):
                continue
            try:
                out += self._event(data)
            except (AttributeError, TypeError, KeyError, ValueError):
                self._done = True  # a field of the wrong type: the upstream broke the protocol
                out += malformed_frames()
        return bytes(out)

    def _event(self, data: Json) -> bytes:
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(data.get("index", 0), data.get("delta") or {})
        if kind == "message_start":
            return self._start(data.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if kind == "content_block_stop":
            return self._block_stop(data.get("index", 0))
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            return self._error(data.get("error") or {})
        return b""  # ping and unknown future events

    def _start(self, message: Json) -> bytes:
        if message.get("id"):
            self._out.id = message["id"]
        if isinstance(message.get("model"), str) and message["model"]:
            self.response_model = self._out.model = message["model"]
        set_counters(self._usage, message.get("usage"))
        return self._out.chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: int, block: Json) -> bytes:
        kind = block.get("type")
        if kind == "tool_use":
            tool_index = len(self._tools)
            self._tools[index] = [tool_index, False, block.get("input")]
            return self._out.tool_start(tool_index, block.get("id") or c.new_id("call_"), block.get("name"))
        if kind == "text" and block.get("text"):
            return self._out.chunk({"content": block["text"]})
        if kind == "thinking" and block.get("thinking"):
            return self._out.chunk({"reasoning_content": block["thinking"]})
        return b""

    def _delta(self, index: int, delta: Json) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._out.chunk({"content": delta.get("text", "")})
        if kind == "input_json_delta":
            tool = self._tools.get(index)
            fragment = delta.get("partial_json") or ""
            if tool is None or not fragment:
                return b""
            tool[1] = True
            return self._out.tool_args(tool[0], fragment)
        if kind == "thinking_delta":
            return self._out.chunk({"reasoning_content": delta.get("thinking", "")})
        if kind == "signature_delta":
            # Not OpenAI's; lets clients replay signed reasoning on the next turn.
            return self._out.chunk({"reasoning_signature": delta.get("signature", "")})
        return b""  # citations_delta and others have no OpenAI equivalent

    def _block_stop(self, index: int) -> bytes:
        tool = self._tools.get(index)
        if tool is None or tool[1]:
            return b""
        # A tool call without argument deltas still needs valid JSON arguments.
        tool[1] = True
        return self._out.tool_args(tool[0], c.dumps_str(tool[2] or {}))

    def _message_delta(self, data: Json) -> bytes:
        set_counters(self._usage, data.get("usage"))
        reason = (data.get("delta") or {}).get("stop_reason")
        if not reason or self._finished:
            return b""
        self._finished = True
        return self._out.chunk({}, finish_reason=FINISH_REASONS.get(reason, "stop"))

    def _end(self) -> bytes:
        self._done = True
        out = b""
        if not self._finished:
            self._finished = True
            out = self._out.chunk({}, finish_reason="stop")
        if self._out.include_usage and self._usage:
            out += self._out.usage_chunk(_usage(self._usage))
        return out + DONE

    def _error(self, err: Json) -> bytes:
        self._done = True
        kind = err.get("type") or "api_error"
        status = ERROR_STATUS.get(kind, 500)
        return error_frame(err.get("message") or kind, openai_error_type(status), kind) + DONE


# ---------------------------------------------------------------- native streams


class AnthropicStreamObserver:
    """Reads usage and the model from an Anthropic SSE stream passed on untouched.

    ``feed`` returns its input unchanged, so the client gets the provider's bytes;
    only ``message_start`` (model, input counts) and ``message_delta`` (running
    totals: set, never added) are parsed.
    """

    def __init__(self, model: str | None = None) -> None:
        self.response_model: str | None = None
        self._usage: Json = {}
        self._sse = SSEDecoder()

    @property
    def usage(self) -> Usage | None:
        return from_anthropic(self._usage) if self._usage else None

    def feed(self, chunk: bytes) -> bytes:
        self._read(self._sse.feed(chunk))
        return chunk

    def finish(self) -> bytes:
        self._read(self._sse.flush())
        return b""

    def _read(self, events: list[SSEEvent]) -> None:
        for event in events:
            if event.event not in (None, "message_start", "message_delta"):
                continue  # deltas and pings: most of the stream, never parsed
            if b"message_start" not in event.data and b"message_delta" not in event.data:
                continue
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if data.get("type") == "message_start" and isinstance(data.get("message"), dict):
                message = data["message"]
                if isinstance(message.get("model"), str) and message["model"]:
                    self.response_model = message["model"]
                set_counters(self._usage, message.get("usage"))
            elif data.get("type") == "message_delta":
                set_counters(self._usage, data.get("usage"))
