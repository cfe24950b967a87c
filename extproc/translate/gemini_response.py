"""Gemini generateContent -> OpenAI chat.completions: a whole (non-streamed) answer, and errors."""

from __future__ import annotations

from typing import Any

from . import common as c
from .base import Json, openai_error, openai_error_type
from .usage import Usage, from_gemini

FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def _finish(reason: str | None, has_tools: bool) -> str | None:
    if not reason:
        return None
    if reason == "STOP" and has_tools:
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def chat_response(resp: Json, model: str, *, created: int = 0) -> Json:
    choices = [_choice(cand, i) for i, cand in enumerate(resp.get("candidates") or ())]
    if not choices:
        # No candidates: the prompt itself was blocked.
        blocked = (resp.get("promptFeedback") or {}).get("blockReason")
        choices = [c.choice(0, "", [], "content_filter" if blocked else "stop")]
    usage = _usage(resp.get("usageMetadata") or {})
    return c.completion(
        resp.get("responseId") or c.new_id(), resp.get("modelVersion") or model, created, choices, usage
    )


def _choice(cand: Json, position: int) -> Json:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for part in (cand.get("content") or {}).get("parts") or ():
        fn = part.get("functionCall")
        if isinstance(fn, dict):
            calls.append(c.tool_call(fn.get("id") or c.new_id("call_"), fn.get("name"), fn.get("args")))
        elif "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
    finish = _finish(cand.get("finishReason"), bool(calls)) or "stop"
    text = "".join(texts) if texts else None
    return c.choice(cand.get("index", position), text, calls, finish, "".join(thoughts) if thoughts else None)


def _usage(meta: Any) -> Json:
    # Tool-use prompt tokens are input too; thoughts are billed as output (see usage.from_gemini).
    usage = from_gemini(meta) or Usage()
    thought = isinstance(meta, dict) and meta.get("thoughtsTokenCount") is not None
    return c.make_usage(
        usage.input_tokens,
        usage.output_tokens,
        cached=usage.cache_read_tokens,
        reasoning=usage.reasoning_tokens if thought else None,
    )


def error_response(status: int, body: bytes) -> tuple[int, Json]:
    parsed = c.load_json(body)
    if isinstance(parsed, list) and parsed:  # the JSON-array stream form wraps errors in a list
        parsed = parsed[0]
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and err.get("message"):
        code = err.get("status") or err.get("code")
        return status, openai_error(str(err["message"]), openai_error_type(status), code)
    return status, openai_error(c.body_text(status, body), openai_error_type(status))
