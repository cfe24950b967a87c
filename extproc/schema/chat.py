"""OpenAI chat.completions requests, as OpenAI's API reference documents them.

The keys the translators read, with their types; the handful of widely used extensions the
translators carry (``top_k``, ``reasoning_content``/``reasoning_signature`` on assistant turns,
an ``image_url`` given as a bare string, tool-call ``arguments`` as an object) are typed too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

from pydantic import Field
from typing_extensions import TypedDict

from .shared import Model, Number, Object, strict, tagged

# ---------------------------------------------------------------- content parts


@strict
class TextPart(TypedDict, total=False):
    type: Required[str]
    text: Required[str]


@strict
class ImageURL(TypedDict, total=False):
    url: Required[str]
    detail: str | None


@strict
class ImagePart(TypedDict, total=False):
    type: Required[str]
    image_url: Required[ImageURL | str]


@strict
class InputAudio(TypedDict, total=False):
    data: Required[str]
    format: Required[str]


@strict
class AudioPart(TypedDict, total=False):
    type: Required[str]
    input_audio: Required[InputAudio]


@strict
class File(TypedDict, total=False):
    file_data: str | None
    file_id: str | None
    filename: str | None


@strict
class FilePart(TypedDict, total=False):
    type: Required[str]
    file: Required[File]


@strict
class RefusalPart(TypedDict, total=False):
    type: Required[str]
    refusal: Required[str]


@strict
class OtherPart(TypedDict, total=False):
    type: Required[str]


Part = tagged(
    "type",
    {
        "text": TextPart,
        "image_url": ImagePart,
        "input_audio": AudioPart,
        "file": FilePart,
        "refusal": RefusalPart,
    },
    OtherPart,
)
Content = str | list[Part]


# ---------------------------------------------------------------- messages


@strict
class Function(TypedDict, total=False):
    name: Required[str]
    arguments: Required[str | Object]


@strict
class FunctionCall(TypedDict, total=False):
    id: Required[str]
    type: Required[str]
    function: Required[Function]


@strict
class OtherCall(TypedDict, total=False):
    id: Required[str]
    type: Required[str]


ToolCall = tagged("type", {"function": FunctionCall}, OtherCall)


@strict
class SystemMessage(TypedDict, total=False):
    role: Required[Literal["system", "developer"]]
    content: Required[Content]
    name: str | None


@strict
class UserMessage(TypedDict, total=False):
    role: Required[Literal["user"]]
    content: Required[Content]
    name: str | None


@strict
class AssistantMessage(TypedDict, total=False):
    role: Required[Literal["assistant"]]
    content: Content | None
    refusal: str | None
    name: str | None
    tool_calls: list[ToolCall] | None
    function_call: Object | None
    audio: Object | None
    reasoning_content: str | None
    reasoning_signature: str | None


@strict
class ToolMessage(TypedDict, total=False):
    role: Required[Literal["tool"]]
    content: Required[Content]
    tool_call_id: Required[str]


@strict
class FunctionMessage(TypedDict, total=False):
    role: Required[Literal["function"]]
    content: Required[str | None]
    name: Required[str]


# A closed set: a role OpenAI does not have is an error (``union_tag_invalid``).
Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


# ---------------------------------------------------------------- tools and formats


@strict
class FunctionDefinition(TypedDict, total=False):
    name: Required[str]
    description: str | None
    parameters: Object | None
    strict: bool | None


@strict
class FunctionTool(TypedDict, total=False):
    type: str
    function: Required[FunctionDefinition]


@strict
class OtherTool(TypedDict, total=False):
    type: Required[str]


# OpenAI requires ``type``; the translators have always read a tool without one as a function.
Tool = tagged("type", {"function": FunctionTool}, OtherTool, default="function")


@strict
class NamedFunction(TypedDict, total=False):
    name: Required[str]


@strict
class FunctionChoice(TypedDict, total=False):
    type: Required[str]
    function: Required[NamedFunction]


@strict
class OtherChoice(TypedDict, total=False):
    type: Required[str]


ToolChoice = str | tagged("type", {"function": FunctionChoice}, OtherChoice)


@strict
class JsonSchema(TypedDict, total=False):
    name: Required[str]
    description: str | None
    schema: Object | None
    strict: bool | None


@strict
class JsonSchemaFormat(TypedDict, total=False):
    type: Required[str]
    json_schema: Required[JsonSchema]


@strict
class OtherFormat(TypedDict, total=False):
    type: Required[str]


ResponseFormat = tagged("type", {"json_schema": JsonSchemaFormat}, OtherFormat)


@strict
class StreamOptions(TypedDict, total=False):
    include_usage: bool | None
    include_obfuscation: bool | None


# ---------------------------------------------------------------- the request


@strict
class ChatRequest(TypedDict, total=False):
    model: Model | None
    messages: Required[list[Message]]
    stream: bool | None
    stream_options: StreamOptions | None
    max_tokens: int | None
    max_completion_tokens: int | None
    temperature: Number | None
    top_p: Number | None
    top_k: int | None
    n: int | None
    seed: int | None
    stop: str | list[str] | None
    frequency_penalty: Number | None
    presence_penalty: Number | None
    logprobs: bool | None
    top_logprobs: int | None
    logit_bias: dict[str, Number] | None
    tools: list[Tool] | None
    tool_choice: ToolChoice | None
    parallel_tool_calls: bool | None
    response_format: ResponseFormat | None
    reasoning_effort: str | None
    user: str | None
    metadata: dict[str, str] | None
    store: bool | None
    service_tier: str | None
    modalities: list[str] | None
    audio: Object | None
    prediction: Object | None
    web_search_options: Object | None
    verbosity: str | None
    prompt_cache_key: str | None
    prompt_cache_retention: str | None
    safety_identifier: str | None
    functions: list[Object] | None
    function_call: str | Object | None


SHAPE: Any = ChatRequest
