"""Anthropic Messages requests, as Anthropic's API reference documents them.

The keys the translators read, with their types. Content blocks and tools of kinds these
shapes do not list (server tools, search results, container uploads, ...) are objects with a
string ``type``: Anthropic takes them natively and the other providers' translators refuse
them by name. A ``system`` turn inside ``messages`` is accepted, as the translators always
have (some clients send one).
"""

from __future__ import annotations

from typing import Any, Literal, Required

from typing_extensions import TypedDict

from .shared import Model, Number, Object, strict, tagged

ROLES = ("user", "assistant", "system")


# ---------------------------------------------------------------- sources


@strict
class Base64Source(TypedDict, total=False):
    type: Required[str]
    media_type: Required[str]
    data: Required[str]


@strict
class URLSource(TypedDict, total=False):
    type: Required[str]
    url: Required[str]


@strict
class TextSource(TypedDict, total=False):
    type: Required[str]
    media_type: str | None
    data: Required[str]


@strict
class ContentSource(TypedDict, total=False):
    type: Required[str]
    content: Required[str | list[Block]]


@strict
class OtherSource(TypedDict, total=False):
    type: Required[str]


ImageSource = tagged("type", {"base64": Base64Source, "url": URLSource}, OtherSource)
DocumentSource = tagged(
    "type",
    {"base64": Base64Source, "url": URLSource, "text": TextSource, "content": ContentSource},
    OtherSource,
)


# ---------------------------------------------------------------- content blocks


@strict
class TextBlock(TypedDict, total=False):
    type: Required[str]
    text: Required[str]
    cache_control: Object | None
    citations: list[Object] | None


@strict
class ImageBlock(TypedDict, total=False):
    type: Required[str]
    source: Required[ImageSource]
    cache_control: Object | None


@strict
class DocumentBlock(TypedDict, total=False):
    type: Required[str]
    source: Required[DocumentSource]
    title: str | None
    context: str | None
    citations: Object | None
    cache_control: Object | None


@strict
class ToolUseBlock(TypedDict, total=False):
    type: Required[str]
    id: Required[str]
    name: Required[str]
    input: Required[Object]
    cache_control: Object | None


@strict
class ToolResultBlock(TypedDict, total=False):
    type: Required[str]
    tool_use_id: Required[str]
    content: str | list[Block] | None
    is_error: bool | None
    cache_control: Object | None


@strict
class ThinkingBlock(TypedDict, total=False):
    type: Required[str]
    thinking: Required[str]
    signature: str | None


@strict
class RedactedThinkingBlock(TypedDict, total=False):
    type: Required[str]
    data: Required[str]


@strict
class OtherBlock(TypedDict, total=False):
    type: Required[str]
    cache_control: Object | None


Block = tagged(
    "type",
    {
        "text": TextBlock,
        "image": ImageBlock,
        "document": DocumentBlock,
        "tool_use": ToolUseBlock,
        "tool_result": ToolResultBlock,
        "thinking": ThinkingBlock,
        "redacted_thinking": RedactedThinkingBlock,
    },
    OtherBlock,
)
Content = str | list[Block]


@strict
class Message(TypedDict, total=False):
    role: Required[Literal[ROLES]]  # type: ignore[valid-type]
    content: Required[Content]


# ---------------------------------------------------------------- tools and options


@strict
class CustomTool(TypedDict, total=False):
    type: str | None
    name: Required[str]
    description: str | None
    input_schema: Object | None
    strict: bool | None
    cache_control: Object | None


@strict
class ServerTool(TypedDict, total=False):
    type: Required[str]
    name: str | None
    cache_control: Object | None


Tool = tagged("type", {"custom": CustomTool}, ServerTool, default="custom")


@strict
class ToolChoice(TypedDict, total=False):
    type: Required[str]
    name: str | None
    disable_parallel_tool_use: bool | None


@strict
class Thinking(TypedDict, total=False):
    type: Required[str]
    budget_tokens: int | None


@strict
class OutputFormat(TypedDict, total=False):
    type: Required[str]
    schema: Object | None


@strict
class OutputConfig(TypedDict, total=False):
    format: OutputFormat | None
    effort: str | None


@strict
class Metadata(TypedDict, total=False):
    user_id: str | None


@strict
class MessagesRequest(TypedDict, total=False):
    model: Model | None
    messages: Required[list[Message]]
    max_tokens: int | None
    system: str | list[TextBlock] | None
    stop_sequences: list[str] | None
    stream: bool | None
    temperature: Number | None
    top_p: Number | None
    top_k: int | None
    metadata: Metadata | None
    tools: list[Tool] | None
    tool_choice: ToolChoice | None
    thinking: Thinking | None
    output_config: OutputConfig | None
    output_format: OutputFormat | str | None  # the corpus has "markdown"; only an object is read
    service_tier: str | None
    container: str | Object | None
    mcp_servers: list[Object] | None
    context_management: Object | None
    cache_control: Object | None
    inference_geo: str | None


SHAPE: Any = MessagesRequest
