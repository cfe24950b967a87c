"""OpenAI and Azure OpenAI operations: chat completions, embeddings and the model list."""

from __future__ import annotations

import orjson
from aiohttp import web

from extproc.mock import formats
from extproc.mock.context import CT_SSE, BadRequest, Ctx
from extproc.mock.moderation import moderation
from extproc.mock.ops.common import reply_for, require_list
from extproc.mock.parsing import parse_openai
from extproc.mock.send import send_body, send_stream


async def op_chat(ctx: Ctx) -> web.StreamResponse:
    if ctx.provider == "azure" and "api-version" not in ctx.request.query:
        raise BadRequest("Missing required query parameter: api-version")
    body = ctx.json()
    require_list(body, "messages", "'messages' is a required property and must be a non-empty array.")
    if ctx.provider == "openai" and not body.get("model"):
        raise BadRequest("you must provide a model parameter")
    conv = parse_openai(body, ctx.params.get("deployment", ""))
    reply = reply_for(ctx, conv, "chatcmpl-mock", "call_mock")
    if conv.stream:
        events = formats.openai_stream(reply, conv.model, conv.include_usage)
        return await send_stream(ctx, events, CT_SSE, formats.OPENAI_DONE, formats.openai_stream_error())
    return await send_body(ctx, formats.openai_response(reply, conv.model))


async def op_embeddings(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    if "input" not in body:
        raise BadRequest("'input' is a required property")
    model = str(body.get("model") or ctx.params.get("deployment", ""))
    return await send_body(ctx, formats.openai_embeddings(body, model))


async def op_models(ctx: Ctx) -> web.StreamResponse:
    return await send_body(ctx, formats.OPENAI_MODELS)


async def op_moderations(ctx: Ctx) -> web.StreamResponse:
    return await send_body(ctx, orjson.dumps(moderation(ctx.json(), ctx.state.next_id())))
