"""OpenAI chat.completions <-> AWS Bedrock Converse / ConverseStream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from . import common as c
from .base import Json, TranslationError, openai_error, openai_error_type
from .fields import CHAT_IGNORED, CHAT_OPENAI_ONLY, NO_NOOP, FieldTable
from .sse import DONE, error_frame, malformed_frames
from .usage import Usage, from_bedrock

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "tool_use": "tool_calls",
}

# Bedrock error shape names and the HTTP status Bedrock answers them with.
ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelNotReadyException": 429,
    "ThrottlingException": 429,
    "ServiceQuotaExceededException": 429,
    "InternalServerException": 500,
    "ModelStreamErrorException": 500,
    "ServiceUnavailableException": 503,
}
# The likeliest shape for a status when neither header nor body names one.
_TYPE_BY_STATUS: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}

# Bedrock requires toolConfig whenever the history holds toolUse/toolResult blocks,
# even if this request offers no tools; this stands in for them.
PLACEHOLDER_TOOL: Json = {
    "toolSpec": {
        "name": "gateway_placeholder_do_not_call",
        "description": "Placeholder so earlier tool calls can be replayed; never call it.",
        "inputSchema": {"json": {"type": "object"}},
    }
}

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOC_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/plain": "txt",
    "text/html": "html",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
_ANY_OBJECT_SCHEMA = '{"type":"object","additionalProperties":true}'

# The chat.completions fields carried to Converse, dropped (see CHAT_IGNORED for why),
# or refused unless they hold their no-op value (see fields.py).
REQUEST_FIELDS = FieldTable(
    provider="Bedrock",
    mapped=frozenset(
        {
            "model",  # the path
            "stream",  # the path: converse-stream
            "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
            "tools", "tool_choice", "response_format", "reasoning_effort",
            "top_k",  # no Converse field: additionalModelRequestFields, as the model names it
            "n",  # 1 only (reject_n)
        }
    ),
    ignored={**CHAT_IGNORED, "user": "Converse has no end-user field; the id tracks abuse, not the answer"},
    unsupported={
        **CHAT_OPENAI_ONLY,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "seed": NO_NOOP,
        "parallel_tool_calls": True,  # Converse cannot be told to call one tool at a time
    },
)  # fmt: skip


# ---------------------------------------------------------------- request


def chat_request(req: Json, model: str) -> Json:
    """The Converse body; ``model`` goes in the URL path, not here."""
    REQUEST_FIELDS.check(req)
    c.reject_n(req)
    system, messages, has_tool_blocks = _convert_messages(req.get("messages") or [])
    limit = c.max_tokens(req) or c.DEFAULT_MAX_TOKENS
    body: Json = {"messages": messages}
    if system:
        body["system"] = [{"text": s} for s in system]
    inference: Json = {"maxTokens": limit}
    if req.get("temperature") is not None:
        inference["temperature"] = req["temperature"]
    if req.get("top_p") is not None:
        inference["topP"] = req["top_p"]
    stop = c.stop_sequences(req)
    if stop:
        inference["stopSequences"] = stop
    body["inferenceConfig"] = inference
    _add_output_format(req, body)
    tool_config = _tool_config(req, has_tool_blocks)
    if tool_config:
        body["toolConfig"] = tool_config
    extra: Json = {}
    if req.get("top_k") is not None:
        extra["top_k"] = req["top_k"]  # Claude's name; a model without it answers a ValidationException
    budget = c.reasoning_budget(req)
    if budget:
        extra["thinking"] = {"type": "enabled", "budget_tokens": c.capped_budget(budget, limit)}
    if extra:
        body["additionalModelRequestFields"] = extra
    return body


def _convert_messages(messages: list[Json]) -> tuple[list[str], list[Json], bool]:
    system: list[str] = []
    turns: list[Json] = []
    has_tool_blocks = False
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(c.text_content(msg.get("content")))
        elif role == "user":
            c.append_turn(turns, "user", _user_blocks(msg.get("content")), "content")
        elif role == "assistant":
            has_tool_blocks = has_tool_blocks or bool(msg.get("tool_calls"))
            c.append_turn(turns, "assistant", _assistant_blocks(msg), "content")
        elif role == "tool":
            has_tool_blocks = True
            c.append_turn(turns, "user", [_tool_result(msg)], "content")
        else:
            raise TranslationError(f"unsupported message role {role!r}", "messages")
    return system, turns, has_tool_blocks


def _user_blocks(content: Any) -> list[Json]:
    blocks: list[Json] = []
    for part in c.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):  # Bedrock rejects blank text blocks
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(c.image_url(part)))
        elif kind == "file":
            blocks.append(_document_block(part, len(blocks)))
        else:
            raise TranslationError(f"content part {kind!r} is not supported by Bedrock", "messages")
    return blocks


def _image_block(url: str) -> Json:
    inline = c.parse_data_url(url)
    if inline:
        mime, data = inline
        source: Json = {"bytes": data}  # blobs travel base64-encoded in Bedrock's JSON
    elif url.startswith("s3://"):
        mime, source = c.guess_mime(url), {"s3Location": {"uri": url}}
    else:
        raise TranslationError("Bedrock takes images as base64 data URLs or s3:// URLs only", "messages")
    return image_block(mime, source)


def image_block(mime: str, source: Json) -> Json:
    """A Converse image block; Bedrock knows four image formats."""
    fmt = _IMAGE_FORMATS.get(mime)
    if fmt is None:
        raise TranslationError(f"image type {mime!r} is not supported by Bedrock", "messages")
    return {"image": {"format": fmt, "source": source}}


def _document_block(part: Json, position: int) -> Json:
    mime, data, filename = c.file_data(part)
    fmt = _DOC_FORMATS.get(mime)
    if fmt is None:
        raise TranslationError(f"file type {mime} is not supported by Bedrock", "messages")
    # Bedrock requires a document name made of letters, digits, spaces, hyphens, brackets.
    stem = (filename or "").rsplit(".", 1)[0]
    name = "".join(ch for ch in stem if ch.isalnum() or ch in " -()[]").strip() or f"document-{position}"
    return {"document": {"format": fmt, "name": name, "source": {"bytes": data}}}


def _assistant_blocks(msg: Json) -> list[Json]:
    blocks: list[Json] = []
    # Only signed reasoning can be replayed; Bedrock rejects unsigned reasoning text.
    if msg.get("reasoning_content") and msg.get("reasoning_signature"):
        text = {"text": msg["reasoning_content"], "signature": msg["reasoning_signature"]}
        blocks.append({"reasoningContent": {"reasoningText": text}})
    text = c.text_content(msg.get("content"))
    if text:
        blocks.append({"text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        use = {
            "toolUseId": call.get("id"),
            "name": fn.get("name"),
            "input": c.parse_arguments(fn.get("arguments")),
        }
        blocks.append({"toolUse": use})
    return blocks


def _tool_result(msg: Json) -> Json:
    return {
        "toolResult": {
            "toolUseId": msg.get("tool_call_id"),
            "content": [{"text": c.text_content(msg.get("content"))}],
        }
    }


def _tool_config(req: Json, has_tool_blocks: bool) -> Json | None:
    choice = c.tool_choice(req)
    # Converse has no "none": offering no tools is the way to forbid calls.
    functions = [] if choice and choice[0] == "none" else c.function_tools(req)
    tools = [_tool_spec(fn) for fn in functions]
    if not tools:
        return {"tools": [PLACEHOLDER_TOOL]} if has_tool_blocks else None
    config: Json = {"tools": tools}
    if choice and choice[0] != "none":
        mode, name = choice
        config["toolChoice"] = {"auto": {"auto": {}}, "required": {"any": {}}}.get(mode) or {
            "tool": {"name": name}
        }
    return config


def _tool_spec(fn: Json) -> Json:
    spec: Json = {"name": fn.get("name")}
    if fn.get("description"):
        spec["description"] = fn["description"]
    spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
    return {"toolSpec": spec}


def _add_output_format(req: Json, body: Json) -> None:
    fmt = c.response_format(req)
    if fmt is None:
        return
    kind, spec = fmt
    definition: Json = {"schema": _ANY_OBJECT_SCHEMA}
    if kind == "json_schema" and spec:
        if spec.get("schema"):
            definition["schema"] = c.dumps_str(spec["schema"])  # Bedrock takes the schema as a string
        if spec.get("name"):
            definition["name"] = spec["name"]
        if spec.get("description"):
            definition["description"] = spec["description"]
    body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


# ---------------------------------------------------------------- response


def chat_response(resp: Json, model: str, *, created: int = 0) -> Json:
    texts: list[str] = []
    reasoning: list[str] = []
    signature: str | None = None
    calls: list[Json] = []
    for block in ((resp.get("output") or {}).get("message") or {}).get("content") or ():
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                c.tool_call(use.get("toolUseId") or c.new_id("call_"), use.get("name"), use.get("input"))
            )
        elif "reasoningContent" in block:
            rt = block["reasoningContent"].get("reasoningText") or {}
            reasoning.append(rt.get("text") or "")
            signature = rt.get("signature") or signature
    finish = FINISH_REASONS.get(resp.get("stopReason") or "", "stop")
    text = "".join(texts) if texts else None
    ch = c.choice(0, text, calls, finish, "".join(reasoning) if reasoning else None, signature)
    # Bedrock's body carries no id or model name: the model is the one we called.
    return c.completion(c.new_id(), model, created, [ch], _usage(resp.get("usage") or {}))


def _usage(u: Any) -> Json:
    # inputTokens exclude cache reads and writes; OpenAI's prompt_tokens include them.
    usage = from_bedrock(u) or Usage()
    wrote = isinstance(u, dict) and u.get("cacheWriteInputTokens") is not None
    return c.make_usage(
        usage.input_tokens,
        usage.output_tokens,
        cached=usage.cache_read_tokens,
        cache_write=usage.cache_write_tokens if wrote else None,
    )


def error_response(status: int, body: bytes, error_type: str | None = None) -> tuple[int, Json]:
    """``error_type`` is the ``x-amzn-ErrorType`` header when the caller has it."""
    parsed = c.load_json(body)
    message = None
    if isinstance(parsed, dict):
        message = parsed.get("message") or parsed.get("Message")
        error_type = error_type or parsed.get("__type")
    code = _shape_name(error_type) if error_type else _TYPE_BY_STATUS.get(status)
    text = str(message) if message else c.body_text(status, body)
    return status, openai_error(text, openai_error_type(status), code)


def _shape_name(error_type: str) -> str:
    """``ns#ThrottlingException:http://...`` or ``throttlingException`` -> ``ThrottlingException``."""
    name = error_type.split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].upper() + name[1:]


# ---------------------------------------------------------------- stream


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One ConverseStream message: an ``event`` (name, parsed data), or an ``exception``/``error``."""

    kind: str
    name: str
    message: str = ""
    data: Json | None = None


def stream_item(message: EventStreamMessage) -> StreamItem:
    """What an AWS event-stream message is, from its headers (payloads that are not JSON objects: no data)."""
    headers = message.headers
    kind = headers.get(":message-type", "event")
    if kind == "exception":
        return StreamItem("exception", headers.get(":exception-type") or "internalServerException")
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
            return error_frame("upstream stream ended early", "server_error", "stream_truncated") + DONE
        return self._end()

    def _message(self, message: EventStreamMessage) -> bytes:
        item = stream_item(message)
        if item.kind == "exception":
            return self._exception(item.name, message.payload)
        if item.kind == "error":
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

    def _exception(self, exception_type: str, payload: bytes) -> bytes:
        parsed = c.load_json(payload)
        message = (parsed.get("message") or parsed.get("Message")) if isinstance(parsed, dict) else None
        code = _shape_name(exception_type)
        return self._fail(code, str(message) if message else code)

    def _fail(self, code: str, message: str) -> bytes:
        self._done = True
        status = ERROR_STATUS.get(code, 500)
        return error_frame(message, openai_error_type(status), code) + DONE
