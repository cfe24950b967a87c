"""Small helpers shared by the provider translators (request fields, usage, chunks)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from .base import Json, TranslationError
from .sse import data_frame

DEFAULT_MAX_TOKENS = 4096

# reasoning_effort -> thinking budget in tokens; 1024 is Anthropic's minimum budget.
REASONING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
}

_MIME_ALIASES = {"image/jpg": "image/jpeg"}
_EXT_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex[:24]


def dumps_str(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def load_json(body: bytes) -> Any:
    """Parsed JSON, or None when the body is not JSON (error bodies can be HTML or text)."""
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError):
        return None


def body_text(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()[:2000] if body else ""
    return text or f"upstream returned HTTP {status}"


# ---------------------------------------------------------------- request fields


def max_tokens(req: Json) -> int | None:
    value = req.get("max_completion_tokens")
    return value if value is not None else req.get("max_tokens")


def stop_sequences(req: Json) -> list[str] | None:
    stop = req.get("stop")
    if stop is None or stop == []:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def reject_n(req: Json) -> None:
    n = req.get("n")
    if n is not None and n != 1:
        raise TranslationError("this provider returns one choice per request; n must be 1", "n")


def reasoning_budget(req: Json) -> int | None:
    """Thinking budget for ``reasoning_effort``: None when absent, 0 for "none"."""
    effort = req.get("reasoning_effort")
    if effort is None:
        return None
    if effort == "none":
        return 0
    if effort not in REASONING_BUDGETS:
        raise TranslationError(f"unsupported reasoning_effort {effort!r}", "reasoning_effort")
    return REASONING_BUDGETS[effort]


def capped_budget(budget: int, limit: int) -> int:
    """Anthropic-style budgets must stay below max_tokens and be at least 1024."""
    budget = min(budget, limit - 1)
    if budget < 1024:
        raise TranslationError("reasoning_effort needs max_tokens above 1024 for this model", "max_tokens")
    return budget


def content_parts(content: Any) -> list[Json]:
    """Message content as a list of parts (a plain string is one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise TranslationError("message content must be a string or a list of parts", "messages")


def text_content(content: Any) -> str:
    """The text of a content value; non-text parts are not allowed where only text fits."""
    if isinstance(content, str):
        return content
    texts = []
    for part in content_parts(content):
        if part.get("type") not in ("text", "refusal"):
            raise TranslationError(f"content part {part.get('type')!r} is not allowed here", "messages")
        text = part.get("text") or part.get("refusal") or ""
        if not isinstance(text, str):
            raise TranslationError("a text content part's 'text' must be a string", "messages")
        texts.append(text)
    return "".join(texts)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<data>`` as ``(mime, base64 data)``; None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise TranslationError("data URLs must be base64 encoded", "messages")
    mime = header[: -len(";base64")].split(";", 1)[0].strip().lower() or "application/octet-stream"
    return normalize_mime(mime), data


def normalize_mime(mime: str) -> str:
    return _MIME_ALIASES.get(mime, mime)


def guess_mime(url: str, default: str = "image/jpeg") -> str:
    path = url.split("?", 1)[0].split("#", 1)[0]
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _EXT_MIME.get(ext, default)


def image_url(part: Json) -> str:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url part needs a url", "messages")
    return url


def file_data(part: Json) -> tuple[str, str, str | None]:
    """An OpenAI ``file`` part as ``(mime, base64 data, filename)``; only inline data maps."""
    file = part.get("file") or {}
    data_url = file.get("file_data")
    parsed = parse_data_url(data_url) if isinstance(data_url, str) else None
    if parsed is None:
        raise TranslationError("file parts need file_data as a base64 data URL", "messages")
    return parsed[0], parsed[1], file.get("filename")


def parse_arguments(arguments: Any) -> Json:
    """Tool-call ``arguments`` (a JSON string) as an object; empty means no arguments."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise TranslationError("tool call arguments must be a JSON object", "messages") from None
    if not isinstance(value, dict):
        raise TranslationError("tool call arguments must be a JSON object", "messages")
    return value


def function_tools(req: Json) -> list[Json]:
    """The ``function`` objects of ``tools``; other tool types cannot be translated."""
    functions = []
    for tool in req.get("tools") or ():
        if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
            raise TranslationError(f"tool type {tool.get('type')!r} is not supported", "tools")
        functions.append(tool["function"])
    return functions


def tool_choice(req: Json) -> tuple[str, str | None] | None:
    """``tool_choice`` as ``(mode, name)``: mode is auto, none, required or tool."""
    choice = req.get("tool_choice")
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return choice, None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") == "function" and isinstance(name, str):
            return "tool", name
    raise TranslationError("unsupported tool_choice", "tool_choice")


def response_format(req: Json) -> tuple[str, Json | None] | None:
    """``response_format`` as ``(kind, json_schema object)``; None for plain text."""
    fmt = req.get("response_format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return "json_object", None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        return "json_schema", fmt["json_schema"]
    raise TranslationError("unsupported response_format", "response_format")


def append_turn(turns: list[Json], role: str, blocks: list[Json], key: str) -> None:
    """Append a turn, merging into the previous one when the role repeats.

    Providers want alternating roles (Bedrock rejects repeats; Anthropic wants all
    results of a parallel tool call in one user turn).
    """
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(blocks)
    else:
        turns.append({"role": role, key: blocks})


# ---------------------------------------------------------------- response side


def make_usage(
    prompt: int,
    completion: int,
    cached: int | None = None,
    cache_write: int | None = None,
    reasoning: int | None = None,
) -> Json:
    """OpenAI usage; ``prompt`` must already include cached and cache-write tokens."""
    usage: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    details: Json = {}
    if cached is not None:
        details["cached_tokens"] = cached
    if cache_write is not None:
        details["cache_write_tokens"] = cache_write
    if details:
        usage["prompt_tokens_details"] = details
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def completion(id_: str, model: str, created: int, choices: list[Json], usage: Json | None) -> Json:
    body: Json = {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def choice(
    index: int,
    text: str | None,
    tool_calls: list[Json],
    finish_reason: str | None,
    reasoning: str | None = None,
    signature: str | None = None,
) -> Json:
    """One ``chat.completion`` choice; content is None only when tools replace it."""
    message: Json = {"role": "assistant", "content": text if text is not None or tool_calls else ""}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if signature:
        # Not OpenAI's; lets clients replay signed reasoning on the next turn.
        message["reasoning_signature"] = signature
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def tool_call(id_: str, name: str, arguments: Any) -> Json:
    args = arguments if isinstance(arguments, str) else dumps_str(arguments if arguments is not None else {})
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


class ChunkWriter:
    """Builds ``chat.completion.chunk`` frames sharing one id, created and model."""

    __slots__ = ("created", "id", "include_usage", "model")

    def __init__(self, id_: str, model: str, created: int, include_usage: bool) -> None:
        self.id = id_
        self.model = model
        self.created = created
        self.include_usage = include_usage

    def chunk(self, delta: Json, index: int = 0, finish_reason: str | None = None) -> bytes:
        body: Json = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            body["usage"] = None
        return data_frame(body)

    def usage_chunk(self, usage: Json) -> bytes:
        return data_frame(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
        )

    def tool_start(self, tool_index: int, id_: str, name: str, index: int = 0) -> bytes:
        call = {
            "index": tool_index,
            "id": id_,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self.chunk({"tool_calls": [call]}, index)

    def tool_args(self, tool_index: int, fragment: str, index: int = 0) -> bytes:
        return self.chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": fragment}}]}, index)
