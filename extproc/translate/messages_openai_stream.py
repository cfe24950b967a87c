"""OpenAI ``chat.completion.chunk`` SSE -> Anthropic Messages SSE events: ``ChunkEvents``."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from . import common as c
from . import messages_common as m
from .base import Json
from .messages_openai_response import message_usage, stop_reason
from .sse import SSEEvent, SSETranslator
from .usage import Usage, from_openai

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
