"""Anthropic Messages SSE -> OpenAI chunks (``ChatStream``), and the observer of native streams."""

from __future__ import annotations

from typing import Any

import orjson

from . import common as c
from . import messages_common as m
from .anthropic_response import ERROR_STATUS, FINISH_REASONS, _usage
from .base import Json, openai_error_type
from .sse import (
    DONE,
    JSONEventTranslator,
    RawEvents,
    SSEDecoder,
    SSEEvent,
    complete_tail,
    error_frame,
    truncated_frames,
)
from .usage import Usage, from_anthropic, set_counters

# ---------------------------------------------------------------- stream


class ChatStream(JSONEventTranslator):
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

    @property
    def usage(self) -> Usage | None:
        return from_anthropic(self._usage) if self._usage else None

    def _ended(self) -> bytes:
        if not self._finished:
            self._done = True
            return truncated_frames()
        return self._end()

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

    The client gets the provider's bytes, whole event by whole event (a partial event waits
    for its end, so the gateway can always end the stream with a well-formed event of its own);
    only ``message_start`` (model, input counts) and ``message_delta`` (running totals: set,
    never added) are parsed. A stream that ends without ``message_stop`` or ``error`` gets a
    truncation error event, as the translated streams do.
    """

    def __init__(self, model: str | None = None) -> None:
        self.response_model: str | None = None
        self._usage: Json = {}
        self._sse = SSEDecoder()
        self._raw = RawEvents()
        self.done = False  # message_stop or error went by

    @property
    def usage(self) -> Usage | None:
        return from_anthropic(self._usage) if self._usage else None

    def feed(self, chunk: bytes) -> bytes:
        raws = self._raw.feed(chunk)
        for raw in raws:
            self._read(self._sse.feed(raw))
        return b"".join(raws)

    def finish(self) -> bytes:
        raw = complete_tail(self._raw.flush())
        self._read(self._sse.feed(raw) + self._sse.flush())
        if self.done:
            return raw
        self.done = True
        return raw + m.error_event("api_error", m.TRUNCATED)

    def _read(self, events: list[SSEEvent]) -> None:
        for event in events:
            if event.event in ("message_stop", "error"):
                self.done = True
                continue
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
