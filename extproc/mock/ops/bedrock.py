"""Amazon Bedrock operations: Converse (plain and streaming) and InvokeModel embeddings."""

from __future__ import annotations

from aiohttp import web

from extproc.mock import embeddings, formats
from extproc.mock.context import CT_EVENTSTREAM, Ctx
from extproc.mock.ops.common import reply_for, require_list
from extproc.mock.parsing import parse_bedrock
from extproc.mock.send import send_body, send_stream


async def op_converse(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    require_list(body, "messages", "A conversation must start with a user message.")
    conv = parse_bedrock(body, ctx.params["model"])
    reply = reply_for(ctx, conv, "mock", "tooluse_mock")
    if ctx.params["action"] == "converse-stream":
        events = formats.bedrock_stream(reply)
        return await send_stream(ctx, events, CT_EVENTSTREAM, None, formats.bedrock_stream_error())
    return await send_body(
        ctx, formats.bedrock_response(reply), headers={"x-amzn-RequestId": "mock-request-id"}
    )


async def op_invoke(ctx: Ctx) -> web.StreamResponse:
    request_id = f"mock-embed-{ctx.state.next_id()}"
    answer = embeddings.bedrock_invoke(ctx.json(), ctx.params["model"], request_id)
    headers = {"x-amzn-RequestId": "mock-request-id", "X-Amzn-Bedrock-Invocation-Latency": "1"}
    if answer.input_tokens is not None:
        # Amazon's models report input tokens in this header (the body may not carry them).
        headers["X-Amzn-Bedrock-Input-Token-Count"] = str(answer.input_tokens)
    return await send_body(ctx, answer.body, headers=headers)
