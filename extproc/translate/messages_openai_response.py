"""OpenAI chat.completions -> Anthropic Messages: a whole (non-streamed) answer, its usage and stop reason."""

from __future__ import annotations

from typing import Any

from . import common as c
from . import messages_common as m
from .base import Json, TranslationError
from .usage import Usage, from_openai

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_usage(u: Any) -> Json:
    """OpenAI usage as Anthropic's: prompt_tokens include cache reads and writes, input_tokens don't."""
    return (from_openai(u, billed_total=False) or Usage()).anthropic()


def stop_reason(finish: Any, has_tools: bool) -> str:
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    # Some compatible servers finish tool calls with "stop".
    return "tool_use" if reason == "end_turn" and has_tools else reason


def message_response(resp: Json, model: str) -> Json:
    """A ``chat.completion`` as a Messages response (first choice; we never ask for more)."""
    choices = resp.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[Json] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        # Unsigned: our Anthropic and Bedrock request translators drop it on replay.
        signature = msg.get("reasoning_signature") or ""
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    text = _text(msg.get("content"))
    refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) else None
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = msg.get("tool_calls") or []
    for call in calls:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or c.new_id("toolu_"),
                "name": fn.get("name") or "",
                "input": _tool_input(fn.get("arguments")),
            }
        )
    stop = stop_reason(choice.get("finish_reason"), bool(calls))
    if refusal and not text and stop == "end_turn":
        stop = "refusal"
    id_ = resp.get("id") or c.new_id("msg_")
    return m.message(id_, resp.get("model") or model, content, stop, None, message_usage(resp.get("usage")))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some compatible servers answer with parts
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _tool_input(arguments: Any) -> Any:
    """Arguments as an object; a call cut off by max_tokens keeps its raw text, as the peer does."""
    try:
        return c.parse_arguments(arguments)
    except (TranslationError, TypeError):
        return arguments
