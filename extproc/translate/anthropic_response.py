"""Anthropic Messages -> OpenAI chat.completions: a whole (non-streamed) answer, and errors."""

from __future__ import annotations

from typing import Any

from . import common as c
from .base import Json, openai_error, openai_error_type
from .usage import Usage, from_anthropic

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types and the HTTP status Anthropic answers them with.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def chat_response(resp: Json, model: str, *, created: int = 0) -> Json:
    texts: list[str] = []
    reasoning: list[str] = []
    signature: str | None = None
    calls: list[Json] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            signature = block.get("signature") or signature
        elif kind == "tool_use":
            calls.append(
                c.tool_call(block.get("id") or c.new_id("call_"), block.get("name"), block.get("input"))
            )
    finish = FINISH_REASONS.get(resp.get("stop_reason") or "", "stop")
    text = "".join(texts) if texts else None
    ch = c.choice(0, text, calls, finish, "".join(reasoning) if reasoning else None, signature)
    usage = _usage(resp.get("usage") or {})
    return c.completion(resp.get("id") or c.new_id(), resp.get("model") or model, created, [ch], usage)


def _usage(u: Any) -> Json:
    # Anthropic's input_tokens exclude cache reads and writes; OpenAI's prompt_tokens include them.
    usage = from_anthropic(u) or Usage()
    wrote = isinstance(u, dict) and u.get("cache_creation_input_tokens") is not None
    write = usage.cache_write_tokens if wrote else None
    return c.make_usage(
        usage.input_tokens, usage.output_tokens, cached=usage.cache_read_tokens, cache_write=write
    )


def error_response(status: int, body: bytes) -> tuple[int, Json]:
    parsed = c.load_json(body)
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return status, openai_error(str(err["message"]), openai_error_type(status), err.get("type"))
    return status, openai_error(c.body_text(status, body), openai_error_type(status))
