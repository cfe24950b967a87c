"""OpenAI chat.completions <-> AWS Bedrock Converse / ConverseStream: the request.

The answer is read in ``bedrock_response`` (bodies and errors) and ``bedrock_stream``
(the AWS event stream); their public names are importable from here too.
"""

from __future__ import annotations

from typing import Any

from . import common as c
from .base import Json, TranslationError
from .bedrock_response import ERROR_STATUS, FINISH_REASONS, chat_response, error_response
from .bedrock_stream import ChatStream, StreamItem, stream_item
from .fields import CHAT_IGNORED, CHAT_OPENAI_ONLY, NO_NOOP, FieldTable

__all__ = [
    "DOC_FORMATS",
    "ERROR_STATUS",
    "FINISH_REASONS",
    "PLACEHOLDER_TOOL",
    "REQUEST_FIELDS",
    "ChatStream",
    "StreamItem",
    "chat_request",
    "chat_response",
    "document_name",
    "error_response",
    "image_block",
    "stream_item",
]

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
# The document formats Converse takes (both client APIs' translators read this).
DOC_FORMATS = {
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
    fmt = DOC_FORMATS.get(mime)
    if fmt is None:
        raise TranslationError(f"file type {mime} is not supported by Bedrock", "messages")
    stem = (filename or "").rsplit(".", 1)[0]
    return {"document": {"format": fmt, "name": document_name(stem, position), "source": {"bytes": data}}}


def document_name(text: str, position: int) -> str:
    """Bedrock requires a document name made of letters, digits, spaces, hyphens, brackets."""
    return "".join(ch for ch in text if ch.isalnum() or ch in " -()[]").strip() or f"document-{position}"


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
