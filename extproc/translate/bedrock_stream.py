"""AWS Bedrock ConverseStream (the binary event stream) -> OpenAI chunks: ``ChatStream``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from . import common as c
from .base import Json, openai_error_type
from .bedrock_response import ERROR_STATUS, FINISH_REASONS, _usage, bedrock_shape_name
from .sse import DONE, error_frame, malformed_frames, truncated_frames
from .usage import Usage, from_bedrock

# ---------------------------------------------------------------- stream


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One ConverseStream message: an ``event`` (name, parsed data), or an ``exception``/``error``.

    For an exception ``name`` is its shape name (``ThrottlingException``) and ``message``
    the payload's message, else the name; for an error, the ``:error-code`` and ``:error-message``.
    """

    kind: str
    name: str
    message: str = ""
    data: Json | None = None


def stream_item(message: EventStreamMessage) -> StreamItem:
    """What an AWS event-stream message is, from its headers (payloads that are not JSON objects: no data)."""
    headers = message.headers
    kind = headers.get(":message-type", "event")
    if kind == "exception":
        name = bedrock_shape_name(headers.get(":exception-type") or "internalServerException")
        parsed = c.load_json(message.payload)
        text = (parsed.get("message") or parsed.get("Message")) if isinstance(parsed, dict) else None
        return StreamItem("exception", name, str(text) if text else name)
    if kind == "error":
        code = headers.get(":error-code") or "InternalServerException"
        return StreamItem("error", code, headers.get(":error-message") or code)
    try:
        data = orjson.loads(message.payload) if message.payload else {}
    except orjson.JSONDecodeError:
        data = None
    return StreamItem(
        "event", headers.get(":event-type") or "", data=data if isinstance(data, dict) else None
    )


class ChatStream:
    """Bedrock ConverseStream (AWS binary event stream) -> OpenAI chat.completion.chunk SSE.

    ``usage`` comes from the ``metadata`` event; ``response_model`` stays None (Bedrock's
    events name no model: the model is the one the path called).
    """

    def __init__(self, model: str, include_usage: bool, created: int = 0) -> None:
        self.response_model: str | None = None
        self._out = c.ChunkWriter(c.new_id(), model, created, include_usage)
        self._buf = EventStreamBuffer()
        self._usage_raw: Json | None = None
        self._tools: dict[int, list[Any]] = {}  # block index -> [tool index, args sent]
        self._finished = False
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return from_bedrock(self._usage_raw)

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        self._buf.add_data(chunk)
        out = bytearray()
        try:
            for message in self._buf:
                try:
                    out += self._message(message)
                except (AttributeError, TypeError, KeyError, ValueError):
                    self._done = True  # a field of the wrong type: the upstream broke the protocol
                    out += malformed_frames()
                if self._done:
                    break
        except ParserError as exc:  # bad CRC or framing: the stream cannot be trusted further
            self._done = True
            out += (
                error_frame(f"invalid upstream event stream: {exc}", "server_error", "bad_event_stream")
                + DONE
            )
        return bytes(out)

    def finish(self) -> bytes:
        if self._done:
            return b""
        if not self._finished:
            self._done = True
            return truncated_frames()
        return self._end()

    def _message(self, message: EventStreamMessage) -> bytes:
        item = stream_item(message)
        if item.kind in ("exception", "error"):
            return self._fail(item.name, item.message)
        return self._event(item.name, item.data) if item.data is not None else b""

    def _event(self, event: str | None, data: Json) -> bytes:
        if event == "contentBlockDelta":
            return self._delta(data.get("contentBlockIndex", 0), data.get("delta") or {})
        if event == "messageStart":
            return self._out.chunk({"role": "assistant", "content": ""})
        if event == "contentBlockStart":
            return self._block_start(data.get("contentBlockIndex", 0), data.get("start") or {})
        if event == "contentBlockStop":
            return self._block_stop(data.get("contentBlockIndex", 0))
        if event == "messageStop":
            self._finished = True
            return self._out.chunk({}, finish_reason=FINISH_REASONS.get(data.get("stopReason") or "", "stop"))
        if event == "metadata":
            usage = data.get("usage")
            if isinstance(usage, dict):
                self._usage_raw = {k: v for k, v in usage.items() if isinstance(v, int)}
            return self._end() if self._finished else b""
        return b""

    def _block_start(self, index: int, start: Json) -> bytes:
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return b""
        tool_index = len(self._tools)
        self._tools[index] = [tool_index, False]
        return self._out.tool_start(tool_index, use.get("toolUseId") or c.new_id("call_"), use.get("name"))

    def _delta(self, index: int, delta: Json) -> bytes:
        if "text" in delta:
            return self._out.chunk({"content": delta["text"]})
        if "toolUse" in delta:
            tool = self._tools.get(index)
            fragment = (delta["toolUse"] or {}).get("input") or ""
            if tool is None or not fragment:
                return b""
            tool[1] = True
            return self._out.tool_args(tool[0], fragment)
        if "reasoningContent" in delta:
            rc = delta["reasoningContent"] or {}
            if rc.get("text"):
                return self._out.chunk({"reasoning_content": rc["text"]})
            if rc.get("signature"):
                # Not OpenAI's; lets clients replay signed reasoning on the next turn.
                return self._out.chunk({"reasoning_signature": rc["signature"]})
        return b""

    def _block_stop(self, index: int) -> bytes:
        tool = self._tools.get(index)
        if tool is None or tool[1]:
            return b""
        tool[1] = True  # a call without input deltas still needs valid JSON arguments
        return self._out.tool_args(tool[0], "{}")

    def _end(self) -> bytes:
        self._done = True
        out = b""
        if self._out.include_usage and self._usage_raw is not None:
            out = self._out.usage_chunk(_usage(self._usage_raw))
        return out + DONE

    def _fail(self, code: str, message: str) -> bytes:
        self._done = True
        status = ERROR_STATUS.get(code, 500)
        return error_frame(message, openai_error_type(status), code) + DONE
