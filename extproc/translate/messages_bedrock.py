"""Anthropic Messages (the client's format) <-> AWS Bedrock Converse / ConverseStream.

Converse and Messages are close cousins, so this translates directly rather than
through OpenAI's shape: signed thinking, redacted thinking, cache points and
tool-result status survive the trip.
"""

from __future__ import annotations

import base64
from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from . import bedrock
from . import common as c
from . import messages_common as m
from .base import Json, TranslationError
from .fields import MESSAGES_IGNORED, NO_NOOP, FieldTable
from .messages_openai import (
    block_source,
    content_blocks,
    field_list,
    field_object,
    input_schema,
    output_format,
)
from .usage import Usage, from_bedrock

STOP_REASONS: dict[str, str] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "model_context_window_exceeded": "model_context_window_exceeded",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
}

_DOC_FORMATS = {
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/csv": "csv",
    "text/html": "html",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}


# The Messages fields carried to Converse, dropped (see MESSAGES_IGNORED for why), or
# refused (see fields.py).
REQUEST_FIELDS = FieldTable(
    provider="Bedrock",
    mapped=frozenset(
        {
            "model", "stream",  # the path
            "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "tools",
            "output_format",
            "tool_choice",  # but not disable_parallel_tool_use (_tool_config)
            "top_k", "thinking",  # additionalModelRequestFields, as Claude names them
            "output_config",  # format -> outputConfig; the rest (effort) as top_k
            "metadata",  # Claude models only; for others see _model_fields
        }
    ),
    ignored=MESSAGES_IGNORED,
    unsupported={
        "container": NO_NOOP,  # code execution and skills run at Anthropic only
        "mcp_servers": NO_NOOP,  # Anthropic's MCP connector calls the servers itself
        "inference_geo": NO_NOOP,  # data residency: a promise the gateway cannot keep elsewhere
    },
)  # fmt: skip


def _cache_point() -> Json:
    return {"cachePoint": {"type": "default"}}


# ---------------------------------------------------------------- request


def converse_request(req: Json, model: str) -> Json:
    """The Converse body; the model goes in the URL path, not here."""
    REQUEST_FIELDS.check(req)
    system, messages, has_tool_blocks = _convert(req)
    body: Json = {"messages": messages}
    if system:
        body["system"] = system
    body["inferenceConfig"] = _inference(req)
    fmt = output_format(req)
    if fmt is not None:
        definition = {"schema": c.dumps_str(fmt["schema"])}  # a string for Bedrock
        body["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}
        }
    tool_config = _tool_config(req, has_tool_blocks)
    if tool_config:
        body["toolConfig"] = tool_config
    extra = _model_fields(req, model)
    if extra:
        body["additionalModelRequestFields"] = extra
    return body


def _inference(req: Json) -> Json:
    inference: Json = {}
    if req.get("max_tokens") is not None:
        inference["maxTokens"] = req["max_tokens"]
    if req.get("temperature") is not None:
        inference["temperature"] = req["temperature"]
    if req.get("top_p") is not None:
        inference["topP"] = req["top_p"]
    stops = field_list(req, "stop_sequences")
    if stops:
        inference["stopSequences"] = stops
    return inference


def _model_fields(req: Json, model: str) -> Json:
    """Messages fields Converse has no slot for, passed to the model as Anthropic names them."""
    extra: Json = {}
    if isinstance(req.get("thinking"), dict):
        extra["thinking"] = req["thinking"]
    if req.get("top_k") is not None:
        extra["top_k"] = req["top_k"]
    config = {k: v for k, v in field_object(req, "output_config").items() if k != "format"}
    if config:
        extra["output_config"] = config  # effort; the format went to outputConfig
    # Claude Code always sends metadata; only Claude models accept it, others reject the
    # field. It holds only user_id, an abuse-tracking id: dropping it keeps the answer.
    metadata = field_object(req, "metadata")
    if metadata and "claude" in model.lower():
        extra["metadata"] = metadata
    return extra


def _convert(req: Json) -> tuple[list[Json], list[Json], bool]:
    system: list[Json] = []
    if req.get("system"):
        system.extend(_system_blocks(req["system"]))
    turns: list[Json] = []
    has_tool_blocks = False
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", "messages")
    for msg in messages:
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "system":  # a system turn inside messages: Converse only has the top-level list
            system.extend(_system_blocks(msg.get("content")))
            continue
        if role not in ("user", "assistant"):
            raise TranslationError(f"unsupported message role {role!r}", "messages")
        blocks = []
        for block in content_blocks(msg.get("content")):
            has_tool_blocks = has_tool_blocks or block.get("type") in ("tool_use", "tool_result")
            converted = _block(block, role, len(blocks))
            if converted is not None:
                blocks.append(converted)
                if block.get("cache_control"):
                    blocks.append(_cache_point())
        # Converse wants alternating roles: same-role turns merge (a system turn lifted
        # out of messages can leave two user turns side by side).
        c.append_turn(turns, role, blocks, "content")
    return system, turns, has_tool_blocks


def _system_blocks(content: Any) -> list[Json]:
    out: list[Json] = []
    for block in content_blocks(content):
        if block.get("type") != "text":
            raise TranslationError(
                f"{block.get('type')!r} blocks are not allowed in system content", "system"
            )
        out.append({"text": _text(block)})
        if block.get("cache_control"):
            out.append(_cache_point())
    return out


def _text(block: Json) -> str:
    text = block.get("text")
    if text is None or isinstance(text, str):
        return text or ""
    raise TranslationError("text blocks need a string text", "messages")


def _block(block: Json, role: str, position: int) -> Json | None:
    kind = block.get("type")
    if kind == "text":
        text = _text(block)
        return {"text": text} if text else None  # Bedrock rejects blank text
    if kind == "image":
        return _image(block)
    if kind == "document":
        return _document(block, position)
    if kind == "tool_use" and role == "assistant":
        use = {"toolUseId": block.get("id"), "name": block.get("name"), "input": block.get("input") or {}}
        return {"toolUse": use}
    if kind == "tool_result" and role == "user":
        return _tool_result(block)
    if kind == "thinking" and role == "assistant":
        # Bedrock rejects reasoning it cannot verify; unsigned thinking (from other providers) is dropped.
        if not block.get("signature"):
            return None
        text = {"text": block.get("thinking") or "", "signature": block["signature"]}
        return {"reasoningContent": {"reasoningText": text}}
    if kind == "redacted_thinking" and role == "assistant":
        return {"reasoningContent": {"redactedContent": block.get("data") or ""}}
    raise TranslationError(f"content block {kind!r} is not supported by Bedrock in a {role} turn", "messages")


def _image(block: Json) -> Json:
    src = block_source(block)
    kind = src.get("type")
    if kind == "base64":
        mime = src.get("media_type") or ""
        source: Json = {"bytes": src.get("data") or ""}  # blobs travel base64-encoded in Bedrock's JSON
    elif kind == "url" and str(src.get("url") or "").startswith("s3://"):
        mime, source = c.guess_mime(src["url"]), {"s3Location": {"uri": src["url"]}}
    else:
        raise TranslationError("Bedrock takes images as base64 data or s3:// URLs only", "messages")
    return bedrock.image_block(mime, source)


def _document(block: Json, position: int) -> Json:
    src = block_source(block)
    kind = src.get("type")
    if kind == "base64":
        mime, data = src.get("media_type") or "", src.get("data") or ""
    elif kind == "text":
        mime, data = "text/plain", base64.b64encode(str(src.get("data") or "").encode()).decode()
    else:
        raise TranslationError(f"document source {kind!r} is not supported by Bedrock", "messages")
    fmt = _DOC_FORMATS.get(mime)
    if fmt is None:
        raise TranslationError(f"document type {mime!r} is not supported by Bedrock", "messages")
    # Bedrock requires a name made of letters, digits, spaces, hyphens and brackets.
    title = str(block.get("title") or "")
    name = "".join(ch for ch in title if ch.isalnum() or ch in " -()[]").strip() or f"document-{position}"
    return {"document": {"format": fmt, "name": name, "source": {"bytes": data}}}


def _tool_result(block: Json) -> Json:
    content = block.get("content")
    items: list[Json] = []
    for item in content_blocks(content) if content is not None else ():
        kind = item.get("type")
        if kind == "text":
            items.append({"text": _text(item)})
        elif kind == "image":
            items.append(_image(item))
        elif kind == "document":
            items.append(_document(item, len(items)))
        else:
            raise TranslationError(f"tool_result block {kind!r} is not supported by Bedrock", "messages")
    result: Json = {"toolUseId": block.get("tool_use_id"), "content": items or [{"text": ""}]}
    if block.get("is_error"):
        result["status"] = "error"
    return {"toolResult": result}


def _tool_config(req: Json, has_tool_blocks: bool) -> Json | None:
    choice = req.get("tool_choice") or {}
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be an object", "tool_choice")
    kind = choice.get("type")
    # Converse has no "none": offering no tools is the way to forbid calls.
    tools = [] if kind == "none" else _tool_specs(field_list(req, "tools"))
    if tools and choice.get("disable_parallel_tool_use"):
        # Converse's toolChoice has no such switch: refuse rather than drop the wish.
        raise TranslationError(
            "tool_choice.disable_parallel_tool_use is not supported by Bedrock", "tool_choice"
        )
    if not tools:
        # Bedrock wants toolConfig whenever the history holds tool blocks.
        return {"tools": [bedrock.PLACEHOLDER_TOOL]} if has_tool_blocks else None
    config: Json = {"tools": tools}
    if kind == "auto":
        config["toolChoice"] = {"auto": {}}
    elif kind == "any":
        config["toolChoice"] = {"any": {}}
    elif kind == "tool":
        config["toolChoice"] = {"tool": {"name": choice.get("name")}}
    elif kind is not None and kind != "none":
        raise TranslationError(f"unsupported tool_choice type {kind!r}", "tool_choice")
    return config


def _tool_specs(tools: list[Any]) -> list[Json]:
    specs: list[Json] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise TranslationError("tools must be objects", "tools")
        if tool.get("type") not in (None, "custom"):
            continue  # Anthropic's server tools (web search, code execution...) run at Anthropic only
        spec: Json = {"name": tool.get("name")}
        if tool.get("description"):
            spec["description"] = tool["description"]
        spec["inputSchema"] = {"json": input_schema(tool)}
        specs.append({"toolSpec": spec})
        if tool.get("cache_control"):
            specs.append(_cache_point())
    # A cache point alone is no tool: without specs there is nothing to configure.
    return specs if any("toolSpec" in s for s in specs) else []


# ---------------------------------------------------------------- response


def message_usage(u: Any) -> Json:
    return (from_bedrock(u) or Usage()).anthropic()


def _stop_sequence(fields: Any) -> str | None:
    """Claude on Bedrock names the matched stop sequence in additionalModelResponseFields."""
    value = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return value if isinstance(value, str) else None


def message_response(resp: Json, model: str) -> Json:
    content: list[Json] = []
    for block in ((resp.get("output") or {}).get("message") or {}).get("content") or ():
        converted = _response_block(block)
        if converted is not None:
            content.append(converted)
    stop = STOP_REASONS.get(resp.get("stopReason") or "", "end_turn")
    stop_sequence = _stop_sequence(resp.get("additionalModelResponseFields"))
    # Converse's body carries no id or model name: the model is the one we called.
    return m.message(c.new_id("msg_"), model, content, stop, stop_sequence, message_usage(resp.get("usage")))


def _response_block(block: Json) -> Json | None:
    if "text" in block:
        return {"type": "text", "text": block["text"]}
    if "toolUse" in block:
        use = block["toolUse"]
        return {
            "type": "tool_use",
            "id": use.get("toolUseId") or c.new_id("toolu_"),
            "name": use.get("name") or "",
            "input": use.get("input") if use.get("input") is not None else {},
        }
    if "reasoningContent" in block:
        rc = block["reasoningContent"] or {}
        if "redactedContent" in rc:
            return {"type": "redacted_thinking", "data": rc["redactedContent"]}
        text = rc.get("reasoningText") or {}
        return {
            "type": "thinking",
            "thinking": text.get("text") or "",
            "signature": text.get("signature") or "",
        }
    return None  # citations, guard content and future blocks have no Messages twin here


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
        item = bedrock.stream_item(message)
        if item.kind == "exception":
            return self._exception(item.name, message.payload)
        if item.kind == "error":
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

    def _exception(self, exception_type: str, payload: bytes) -> bytes:
        parsed = c.load_json(payload)
        message = (parsed.get("message") or parsed.get("Message")) if isinstance(parsed, dict) else None
        name = m.bedrock_shape_name(exception_type)
        return self._out.error(
            m.BEDROCK_EXCEPTION_TYPES.get(name, "api_error"), str(message) if message else name
        )
