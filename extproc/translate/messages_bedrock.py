"""Anthropic Messages (the client's format) <-> AWS Bedrock Converse / ConverseStream: the request.

Converse and Messages are close cousins, so this translates directly rather than
through OpenAI's shape: signed thinking, redacted thinking, cache points and
tool-result status survive the trip.

The answer is read in ``messages_bedrock_response`` (bodies) and ``messages_bedrock_stream``
(the AWS event stream); their public names are importable from here too.
"""

from __future__ import annotations

import base64
from typing import Any

from . import bedrock
from . import common as c
from .base import Json, TranslationError
from .fields import MESSAGES_IGNORED, NO_NOOP, FieldTable
from .messages_bedrock_response import STOP_REASONS, message_response, message_usage
from .messages_bedrock_stream import ConverseEvents
from .messages_request import (
    block_source,
    block_text,
    content_blocks,
    field_list,
    field_object,
    input_schema,
    output_format,
)

__all__ = [
    "REQUEST_FIELDS",
    "STOP_REASONS",
    "ConverseEvents",
    "converse_request",
    "message_response",
    "message_usage",
]

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
        out.append({"text": block_text(block)})
        if block.get("cache_control"):
            out.append(_cache_point())
    return out


def _block(block: Json, role: str, position: int) -> Json | None:
    kind = block.get("type")
    if kind == "text":
        text = block_text(block)
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
    fmt = bedrock.DOC_FORMATS.get(mime)
    if fmt is None:
        raise TranslationError(f"document type {mime!r} is not supported by Bedrock", "messages")
    name = bedrock.document_name(str(block.get("title") or ""), position)
    return {"document": {"format": fmt, "name": name, "source": {"bytes": data}}}


def _tool_result(block: Json) -> Json:
    content = block.get("content")
    items: list[Json] = []
    for item in content_blocks(content) if content is not None else ():
        kind = item.get("type")
        if kind == "text":
            items.append({"text": block_text(item)})
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
