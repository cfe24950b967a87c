"""Readers of the client's Anthropic Messages request: optional fields, content blocks, schemas.

Each checks the shape it reads and raises ``TranslationError`` naming the field; shared by the
translators that take a Messages request (``messages_openai``, ``messages_bedrock``, ``messages``).
"""

from __future__ import annotations

from typing import Any

from .base import Json, TranslationError


def field_object(req: Json, key: str) -> Json:
    """An optional object field of the request; {} when absent."""
    value = req.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TranslationError(f"{key} must be an object", key)
    return value


def field_list(req: Json, key: str) -> list[Any]:
    """An optional list field of the request; [] when absent."""
    value = req.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranslationError(f"{key} must be a list", key)
    return value


def output_format(req: Json) -> Json | None:
    """The structured-output format: ``output_config.format``, or the older top-level ``output_format``."""
    fmt = field_object(req, "output_config").get("format")
    if fmt is None and isinstance(req.get("output_format"), dict):
        fmt = req["output_format"]
    if fmt is None:
        return None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(fmt.get("schema"), dict)
    ):
        raise TranslationError(
            "output format must be {'type': 'json_schema', 'schema': {...}}", "output_config"
        )
    return fmt


def thinking_kind(req: Json) -> str | None:
    thinking = req.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    return kind if kind in ("enabled", "adaptive") else None


def content_blocks(content: Any, param: str = "messages") -> list[Json]:
    """Message content as a list of blocks (a plain string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise TranslationError("content must be a string or a list of content blocks", param)


def block_text(block: Json) -> str:
    """A text block's ``text``; "" when absent."""
    text = block.get("text")
    if text is None or isinstance(text, str):
        return text or ""
    raise TranslationError("text blocks need a string text", "messages")


def block_source(block: Json) -> Json:
    """An image or document block's ``source``; {} when absent (then its kind is unsupported)."""
    src = block.get("source")
    if src is None:
        return {}
    if not isinstance(src, dict):
        raise TranslationError(f"{block.get('type')} blocks need a source object", "messages")
    return src


def input_schema(tool: Json) -> Json:
    schema = tool.get("input_schema")
    if schema is None:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise TranslationError("a tool's input_schema must be an object", "tools")
    return schema
