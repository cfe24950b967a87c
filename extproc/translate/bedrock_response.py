"""AWS Bedrock Converse -> OpenAI chat.completions: a whole (non-streamed) answer, and errors."""

from __future__ import annotations

from typing import Any

from . import common as c
from .base import Json, openai_error, openai_error_type
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
    code = bedrock_shape_name(error_type) if error_type else _TYPE_BY_STATUS.get(status)
    text = str(message) if message else c.body_text(status, body)
    return status, openai_error(text, openai_error_type(status), code)


def bedrock_shape_name(error_type: str) -> str:
    """``ns#ThrottlingException:http://...`` or ``throttlingException`` -> ``ThrottlingException``."""
    name = error_type.split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].upper() + name[1:]
