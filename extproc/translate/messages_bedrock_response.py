"""AWS Bedrock Converse -> Anthropic Messages: a whole (non-streamed) answer, its usage and stop reason."""

from __future__ import annotations

from typing import Any

from . import common as c
from . import messages_common as m
from .base import Json
from .usage import Usage, from_bedrock

STOP_REASONS: dict[str, str] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "model_context_window_exceeded": "model_context_window_exceeded",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
}


def message_usage(u: Any) -> Json:
    return (from_bedrock(u) or Usage()).anthropic()


def _stop_sequence(fields: Any) -> str | None:
    """Claude on Bedrock names the matched stop sequence in additionalModelResponseFields."""
    value = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return value if isinstance(value, str) else None


def message_response(resp: Json, model: str) -> Json:
    content: list[Json] = []
    for block in ((resp.get("output") or {}).get("message") or {}).get("content") or ():
        converted = _response_block(block)
        if converted is not None:
            content.append(converted)
    stop = STOP_REASONS.get(resp.get("stopReason") or "", "end_turn")
    stop_sequence = _stop_sequence(resp.get("additionalModelResponseFields"))
    # Converse's body carries no id or model name: the model is the one we called.
    return m.message(c.new_id("msg_"), model, content, stop, stop_sequence, message_usage(resp.get("usage")))


def _response_block(block: Json) -> Json | None:
    if "text" in block:
        return {"type": "text", "text": block["text"]}
    if "toolUse" in block:
        use = block["toolUse"]
        return {
            "type": "tool_use",
            "id": use.get("toolUseId") or c.new_id("toolu_"),
            "name": use.get("name") or "",
            "input": use.get("input") if use.get("input") is not None else {},
        }
    if "reasoningContent" in block:
        rc = block["reasoningContent"] or {}
        if "redactedContent" in rc:
            return {"type": "redacted_thinking", "data": rc["redactedContent"]}
        text = rc.get("reasoningText") or {}
        return {
            "type": "thinking",
            "thinking": text.get("text") or "",
            "signature": text.get("signature") or "",
        }
    return None  # citations, guard content and future blocks have no Messages twin here
