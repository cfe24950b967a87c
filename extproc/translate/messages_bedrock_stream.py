"""AWS Bedrock ConverseStream (binary event stream) -> Anthropic Messages SSE: ``ConverseEvents``."""

from __future__ import annotations

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from . import common as c
from . import messages_common as m
from .base import Json
from .bedrock_stream import stream_item
from .messages_bedrock_response import STOP_REASONS, _stop_sequence, message_usage
from .usage import Usage, from_bedrock

# ---------------------------------------------------------------- stream


class ConverseEvents:
    """Bedrock ConverseStream (AWS binary event stream) -> Anthropic Messages SSE events.

    Bedrock's block indices become ours; a block may start with a delta (text and
    reasoning have no contentBlockStart) and may lack its contentBlockStop.
    """

    def __init__(self, model: str) -> None:
        # Bedrock's events name no model: the model is the one the path called.
        self.response_model: str | None = None
        self._out = m.EventWriter(c.new_id("msg_"), model)
        self._buf = EventStreamBuffer()
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._usage: Json | None = None

    @property
    def usage(self) -> Usage | None:
        """From the ``metadata`` event, Bedrock's only usage report."""
        return from_bedrock(self._usage)

    def feed(self, chunk: bytes) -> bytes:
        if self._out.done:
            return b""
        self._buf.add_data(chunk)
        out = bytearray()
        try:
            for message in self._buf:
                try:
                    out += self._message(message)
                except (AttributeError, TypeError, KeyError, ValueError):
                    out += self._out.error("api_error", m.MALFORMED)  # a field of the wrong shape
                if self._out.done:
                    break
        except ParserError as exc:  # bad CRC or framing: the rest cannot be trusted
            out += self._out.error("api_error", f"invalid upstream event stream: {exc}")
        return bytes(out)

    def finish(self) -> bytes:
        if self._out.done:
            return b""
        if self._stop is None:
            return self._out.error("api_error", m.TRUNCATED)
        return self._end()  # messageStop came but metadata did not: end with what we have

    def _message(self, message: EventStreamMessage) -> bytes:
        item = stream_item(message)
        if item.kind in ("exception", "error"):
            type_ = m.BEDROCK_EXCEPTION_TYPES.get(m.bedrock_shape_name(item.name), "api_error")
            return self._out.error(type_, item.message)
        return self._event(item.name, item.data) if item.data is not None else b""

    def _event(self, name: str | None, data: Json) -> bytes:
        if not isinstance(data.get("contentBlockIndex", 0), int):
            raise TypeError("contentBlockIndex must be an integer")
        if name == "contentBlockDelta":
            return self._delta(data.get("contentBlockIndex", 0), data["delta"])
        if name == "messageStart":
            return self._out.start()
        if name == "contentBlockStart":
            return self._block_start(data.get("contentBlockIndex", 0), data.get("start") or {})
        if name == "contentBlockStop":
            index = data.get("contentBlockIndex", 0)
            key = self._out.key
            return self._out.close() if isinstance(key, tuple) and key[0] == index else b""
        if name == "messageStop":
            self._stop = STOP_REASONS.get(data.get("stopReason") or "", "end_turn")
            self._stop_sequence = _stop_sequence(data.get("additionalModelResponseFields"))
            return self._out.start() + self._out.close()
        if name == "metadata":
            if isinstance(data.get("usage"), dict):
                self._usage = data["usage"]
            return self._end() if self._stop is not None else b""
        return b""

    def _block_start(self, index: int, start: Json) -> bytes:
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return b""
        block = {
            "type": "tool_use",
            "id": m.text(use.get("toolUseId")) or c.new_id("toolu_"),
            "name": m.text(use.get("name")),
        }
        return self._out.open((index, "tool_use"), {**block, "input": {}})

    def _delta(self, index: int, delta: Json) -> bytes:
        if "text" in delta:
            out = self._out.ensure((index, "text"), {"type": "text", "text": ""})
            return out + self._out.delta({"type": "text_delta", "text": m.text(delta["text"])})
        if "toolUse" in delta:
            fragment = m.text((delta["toolUse"] or {}).get("input"))
            if self._out.key != (index, "tool_use"):
                raise ValueError("tool input for a block that is not an open tool call")
            return (
                self._out.delta({"type": "input_json_delta", "partial_json": fragment}) if fragment else b""
            )
        if "reasoningContent" in delta:
            return self._reasoning(index, delta["reasoningContent"])
        return b""

    def _reasoning(self, index: int, rc: Json) -> bytes:
        if "redactedContent" in rc:
            # A redacted block arrives whole; it has no delta type of its own.
            block = {"type": "redacted_thinking", "data": m.text(rc["redactedContent"])}
            return self._out.open((index, "redacted"), block)
        text, signature = m.text(rc.get("text")), m.text(rc.get("signature"))
        out = self._out.ensure((index, "thinking"), {"type": "thinking", "thinking": "", "signature": ""})
        if text:
            out += self._out.delta({"type": "thinking_delta", "thinking": text})
        if signature:
            out += self._out.delta({"type": "signature_delta", "signature": signature})
        return out

    def _end(self) -> bytes:
        return self._out.finish(self._stop or "end_turn", self._stop_sequence, message_usage(self._usage))
