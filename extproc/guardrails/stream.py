"""A streamed answer, in the client's format, through the response guards' stream filters.

The answer is read as whole SSE events in the client's format (OpenAI chat chunks or
Anthropic Messages events, whichever provider answered). Each text delta's text goes through
its choice's (or content block's) chain of filters, one per guard; what the chain lets go
leaves in a copy of that delta (none at all while everything is held), and every other event
passes as it came. Held text is let go, in order, before the events that end its text: the
choice's finish chunk, ``[DONE]`` and usage chunks; the block's ``content_block_stop``,
``message_delta``, ``message_stop`` and errors. Pings and the events of other blocks (thinking)
are not held up.

Tool-call arguments, when a guard's scope has ``toolInput`` (``tool_filters``): each call's
argument text (OpenAI's ``tool_calls[].function.arguments`` deltas, Anthropic's
``input_json_delta.partial_json``) goes through a chain of its own, one filter per guard (a
pass-through for the guards without ``toolInput``), masked in its JSON text; the held
arguments go out before the next call of the choice, its finish chunk or the block's stop.

A filter that rejects ends the stream with an error event in the client's format (OpenAI's
``data: {"error": ...}`` then ``data: [DONE]``; Anthropic's ``event: error``); nothing after it
is sent, and the text still held is never sent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from extproc.guardrails.base import StreamFilter, StreamRejected, Verdict
from extproc.translate import messages_common
from extproc.translate.base import openai_error_type
from extproc.translate.sse import DONE, RawEvents, SSEDecoder, data_frame, error_frame

Json = dict[str, Any]
_ENDS_ALL = frozenset({"message_delta", "message_stop", "error"})


class GuardedStream:
    def __init__(
        self,
        api: str,
        filters: Callable[[], list[StreamFilter]],
        tool_filters: Callable[[], list[StreamFilter]] | None = None,
    ) -> None:
        self.api = api
        self.filters = filters
        self.tool_filters = tool_filters  # None: tool arguments pass unchecked
        self.chunk_fields: Json = {}  # the last OpenAI chunk's id, model, ...: for the deltas it adds
        self.raw = RawEvents()
        self.chains: dict[Hashable, list[StreamFilter]] = {}
        self.done: list[list[StreamFilter]] = []  # chains whose text has ended, for the record
        self.templates: dict[Hashable, Json] = {}  # each key's last text delta, to copy
        self.closed = False
        self.rejection: Verdict | None = None

    def chains_seen(self) -> list[list[StreamFilter]]:
        return [*self.done, *self.chains.values()]

    async def feed(self, data: bytes) -> bytes:
        if self.closed:
            return b""
        out = bytearray()
        try:
            for raw in self.raw.feed(data):
                out += await self._event(raw)
        except StreamRejected as rej:
            self.closed, self.rejection = True, rej.verdict
            out += self._error(rej.verdict)
        return bytes(out)

    # --- the chains --------------------------------------------------------------------------

    async def _text(self, key: Hashable, text: str) -> str:
        chain = self.chains.get(key)
        if chain is None:
            make = self.tool_filters if _is_tool(key) and self.tool_filters is not None else self.filters
            chain = self.chains[key] = make()
        for f in chain:
            text = await f.feed(text) if text else ""
        return text

    async def _end(self, key: Hashable) -> str:
        chain = self.chains.pop(key, None)
        if chain is None:
            return ""
        self.done.append(chain)
        text = ""
        for f in chain:
            text = (await f.feed(text) if text else "") + await f.flush()
        return text

    # --- events ------------------------------------------------------------------------------

    async def _event(self, raw: bytes) -> bytes:
        decoder = SSEDecoder()
        events = decoder.feed(raw) + decoder.flush()
        if not events:
            return raw  # comments and blank lines
        event = events[0]
        if self.api == "messages":
            return await self._anthropic(raw, event.event, event.data)
        return await self._openai(raw, event.data)

    async def _openai(self, raw: bytes, data: bytes) -> bytes:
        chunk = _json(data)
        choices = chunk.get("choices") if chunk is not None else None
        if chunk is None or not isinstance(choices, list) or "error" in chunk:
            return await self._openai_end_all() + raw  # [DONE], usage-only chunks, errors
        if len(choices) == 1 and _pure_text(choices[0]) and not chunk.get("usage"):
            choice = choices[0]
            key = choice.get("index", 0)
            self.templates[key] = chunk
            text = await self._text(key, choice["delta"]["content"])
            if not text:
                return b""
            choice["delta"]["content"] = text
            return data_frame(chunk)
        self.chunk_fields = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
        out = bytearray()
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            key = choice.get("index", 0)
            text = _content(choice)
            new = await self._text(key, text) if text is not None else ""
            if _ends_text(choice):
                new += await self._end(key)
            if text is None:
                out += self._openai_delta(key, new)  # held text goes before the chunk that ends it
            elif new != text:
                choice["delta"]["content"] = new
                changed = True
            if self.tool_filters is not None:
                before, tools_changed = await self._openai_tools(key, choice)
                out += before
                changed = changed or tools_changed
        return bytes(out) + (data_frame(chunk) if changed else raw)

    async def _openai_tools(self, index: Any, choice: Json) -> tuple[bytes, bool]:
        """A choice's tool-call argument deltas through their chains, in place: (the held
        arguments of the calls this chunk ends, to go before it; whether the chunk changed)."""
        out = bytearray()
        changed = False
        delta = choice.get("delta")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            key = ("tool", index, call.get("index", 0))
            for other in [k for k in self.chains if _is_tool(k) and k[1] == index and k != key]:
                out += self._openai_tool_delta(other, await self._end(other))  # a new call: the last ended
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                new = await self._text(key, arguments)
                if new != arguments:
                    function["arguments"] = new
                    changed = True
        if choice.get("finish_reason") is not None:
            for key in [k for k in self.chains if _is_tool(k) and k[1] == index]:
                out += self._openai_tool_delta(key, await self._end(key))
        return bytes(out), changed

    def _openai_tool_delta(self, key: Any, arguments: str) -> bytes:
        if not arguments:
            return b""
        _, index, call = key
        delta = {"tool_calls": [{"index": call, "function": {"arguments": arguments}}]}
        return data_frame(
            {**self.chunk_fields, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
        )

    async def _openai_end_all(self) -> bytes:
        out = bytearray()
        for key in list(self.chains):
            held = await self._end(key)
            out += self._openai_tool_delta(key, held) if _is_tool(key) else self._openai_delta(key, held)
        return bytes(out)

    def _openai_delta(self, key: Hashable, text: str) -> bytes:
        template = self.templates.get(key)
        if not text or template is None:
            return b""
        chunk = copy.deepcopy(template)
        choice = chunk["choices"][0]
        choice["delta"] = {"content": text}
        choice["finish_reason"] = None
        return data_frame(chunk)

    async def _anthropic(self, raw: bytes, name: str | None, data: bytes) -> bytes:
        obj = _json(data)
        kind = obj.get("type") if obj is not None else name
        if obj is not None and kind == "content_block_delta":
            delta = obj.get("delta")
            if (
                isinstance(delta, dict)
                and delta.get("type") == "text_delta"
                and isinstance(delta.get("text"), str)
            ):
                key = obj.get("index", 0)
                self.templates[key] = obj
                text = await self._text(key, delta["text"])
                if not text:
                    return b""
                delta["text"] = text
                return messages_common.event("content_block_delta", obj)
            if (
                self.tool_filters is not None
                and isinstance(delta, dict)
                and delta.get("type") == "input_json_delta"
                and isinstance(delta.get("partial_json"), str)
                and delta["partial_json"]
            ):
                text = await self._text(("tool", obj.get("index", 0)), delta["partial_json"])
                if not text:
                    return b""
                delta["partial_json"] = text
                return messages_common.event("content_block_delta", obj)
            return raw
        if kind == "content_block_stop" and obj is not None:
            key = obj.get("index", 0)
            held = self._anthropic_delta(key, await self._end(key))
            return held + self._anthropic_delta(("tool", key), await self._end(("tool", key))) + raw
        if kind in _ENDS_ALL:
            out = bytearray()
            for key in list(self.chains):
                out += self._anthropic_delta(key, await self._end(key))
            return bytes(out) + raw
        return raw

    def _anthropic_delta(self, key: Hashable, text: str) -> bytes:
        if not text:
            return b""
        if _is_tool(key):
            delta = {"type": "input_json_delta", "partial_json": text}
            return messages_common.event(
                "content_block_delta", {"type": "content_block_delta", "index": key[1], "delta": delta}
            )
        return messages_common.event(
            "content_block_delta",
            {"type": "content_block_delta", "index": key, "delta": {"type": "text_delta", "text": text}},
        )

    def _error(self, verdict: Verdict) -> bytes:
        if self.api == "messages":
            return messages_common.error_event(messages_common.error_type(verdict.status), verdict.message)
        code = "guardrail_unavailable" if verdict.action == "fail_closed" else "guardrail_rejected"
        return error_frame(verdict.message, openai_error_type(verdict.status), code) + DONE


class PassThrough(StreamFilter):
    """A guard's place in a chain where it does not look (tool arguments outside its scope)."""

    async def feed(self, text: str) -> str:
        return text

    async def flush(self) -> str:
        return ""


def _is_tool(key: Any) -> bool:
    """A tool call's arguments chain: ("tool", choice, call) for OpenAI, ("tool", block) for Anthropic."""
    return isinstance(key, tuple) and key[0] == "tool"


def _json(data: bytes) -> Json | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _content(choice: Json) -> str | None:
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) and content else None


def _ends_text(choice: Json) -> bool:
    """A finish reason, or a tool call or other delta that is not text: the text before it goes."""
    if choice.get("finish_reason") is not None:
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(
        v is not None for k, v in delta.items() if k not in ("content", "role")
    )


def _pure_text(choice: Any) -> bool:
    """Only text in this chunk for its choice: no role, tool call, finish reason or logprobs."""
    if not isinstance(choice, dict) or _content(choice) is None:
        return False
    if choice.get("finish_reason") is not None or choice.get("logprobs") is not None:
        return False
    return all(v is None for k, v in choice["delta"].items() if k != "content")
