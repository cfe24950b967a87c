"""Google operations: Gemini and Vertex AI generation and embeddings, and the OAuth token endpoint."""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from extproc.mock import embeddings, formats
from extproc.mock.context import CT_JSON, CT_SSE, Ctx
from extproc.mock.conversation import word_count
from extproc.mock.ops.common import reply_for, require_list
from extproc.mock.parsing import parse_gemini
from extproc.mock.send import send_body, send_chunked, send_error, send_stream


async def op_gemini(ctx: Ctx) -> web.StreamResponse:
    action, model = ctx.params["action"], ctx.params["model"]
    if action not in ("generateContent", "streamGenerateContent", "countTokens"):
        return await send_error(ctx, 404, f"Method not found: {action}")
    body = ctx.json()
    conv = parse_gemini(body, model)
    if action == "countTokens":
        return await send_body(
            ctx, orjson.dumps({"totalTokens": max(1, sum(word_count(t) for t in conv.texts))})
        )
    require_list(body, "contents", "* GenerateContentRequest.contents: contents is not specified")
    reply = reply_for(ctx, conv, "mock-resp-", "")
    if action == "generateContent":
        return await send_body(ctx, formats.gemini_response(reply, model))
    payloads = formats.gemini_stream_payloads(reply, model)
    error = formats.gemini_stream_error_payload()
    if ctx.request.query.get("alt") == "sse":
        events = [formats.gemini_sse(p) for p in payloads]
        return await send_stream(ctx, events, CT_SSE, None, formats.gemini_sse(error))
    # Without alt=sse Google streams one JSON array; a mid-stream error becomes its last element.
    after = ctx.controls.stream_error_after
    if after is not None:
        payloads = [*payloads[: max(0, after)], error]
    return await send_chunked(ctx, formats.gemini_json_array(payloads), CT_JSON)


async def op_gemini_embed(ctx: Ctx) -> web.StreamResponse:
    handler = (
        embeddings.gemini_batch_embed
        if ctx.params["action"] == "batchEmbedContents"
        else embeddings.gemini_embed_content
    )
    return await send_body(ctx, handler(ctx.json(), ctx.params["model"]).body)


async def op_vertex_predict(ctx: Ctx) -> web.StreamResponse:
    return await send_body(ctx, embeddings.vertex_predict(ctx.json(), ctx.params["model"]).body)


async def op_token(ctx: Ctx) -> web.StreamResponse:
    """RFC 7523 JWT-bearer grant, as google-auth sends it for a service account."""
    form = dict(parse_qsl(ctx.body.decode("utf-8", "replace")))
    assertion = form.get("assertion", "")
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
        return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT."}, status=400)
    token = f"ya29.mock-{ctx.state.next_id()}"
    return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
