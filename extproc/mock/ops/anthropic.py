"""Anthropic Messages operations, direct and as Vertex AI ``rawPredict``."""

from __future__ import annotations

import orjson
from aiohttp import web

from extproc.mock import formats
from extproc.mock.context import CT_SSE, BadRequest, Ctx
from extproc.mock.conversation import JSON, word_count
from extproc.mock.ops.common import reply_for, require_list
from extproc.mock.parsing import parse_anthropic
from extproc.mock.send import send_body, send_error, send_stream


def _validate_anthropic(ctx: Ctx, body: JSON) -> str:
    """Apply the checks the real Messages API (or Vertex rawPredict) makes; return the model."""
    if ctx.provider == "vertex-anthropic":
        if "anthropic_version" not in body:
            raise BadRequest("anthropic_version: Field required")
        if "model" in body:
            raise BadRequest("model: Extra inputs are not permitted")
        model = ctx.params["model"]
    else:
        if "anthropic-version" not in ctx.request.headers:
            raise BadRequest("anthropic-version: header is required")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
    if not isinstance(body.get("max_tokens"), int):
        raise BadRequest("max_tokens: Field required")
    require_list(body, "messages", "messages: Field required")
    return model


async def op_messages(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    model = _validate_anthropic(ctx, body)
    conv = parse_anthropic(body, model)
    conv.model = model
    reply = reply_for(ctx, conv, "msg_mock", "toolu_mock")
    if conv.stream or ctx.params.get("action") == "streamRawPredict":
        events = formats.anthropic_stream(reply, model)
        return await send_stream(ctx, events, CT_SSE, None, formats.anthropic_stream_error())
    return await send_body(ctx, formats.anthropic_response(reply, model))


async def op_raw_predict(ctx: Ctx) -> web.StreamResponse:
    if ctx.params["action"] not in ("rawPredict", "streamRawPredict"):
        return await send_error(ctx, 404, f"Unsupported method: {ctx.params['action']}")
    return await op_messages(ctx)


async def op_count_tokens(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    conv = parse_anthropic(body)
    tokens = max(1, sum(word_count(t) for t in conv.texts))
    return await send_body(ctx, orjson.dumps({"input_tokens": tokens}))
