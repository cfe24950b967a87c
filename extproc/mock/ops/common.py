"""Helpers every family of mock operations shares."""

from __future__ import annotations

from extproc.mock.context import BadRequest, Ctx
from extproc.mock.conversation import JSON, Conversation, Reply, plan_reply, word_count
from extproc.mock.routes import LABELS


def reply_for(ctx: Ctx, conv: Conversation, id_prefix: str, call_prefix: str) -> Reply:
    label = ctx.state.label(LABELS[ctx.provider])
    seq = ctx.state.next_id()
    reply = plan_reply(conv, label, f"{id_prefix}{seq}", f"{call_prefix}{seq}")
    pieces = ctx.controls.reply_pieces
    if pieces and not reply.tool_calls:
        reply.pieces = list(pieces)
        reply.text = "".join(pieces)
        reply.output_tokens = max(1, word_count(reply.text))
    return reply


def require_list(body: JSON, key: str, message: str) -> None:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise BadRequest(message)
