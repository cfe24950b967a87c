"""The mock's operations, one module per provider family; ``OPS`` maps a route's operation to its handler."""

from __future__ import annotations

from extproc.mock.context import Handler
from extproc.mock.ops.anthropic import op_count_tokens, op_messages, op_raw_predict
from extproc.mock.ops.bedrock import op_converse, op_invoke
from extproc.mock.ops.gemini import op_gemini, op_gemini_embed, op_token, op_vertex_predict
from extproc.mock.ops.openai import op_chat, op_embeddings, op_models, op_moderations

OPS: dict[str, Handler] = {
    "token": op_token,
    "chat": op_chat,
    "embeddings": op_embeddings,
    "models": op_models,
    "moderations": op_moderations,
    "messages": op_messages,
    "raw_predict": op_raw_predict,
    "count_tokens": op_count_tokens,
    "gemini": op_gemini,
    "converse": op_converse,
    "gemini_embed": op_gemini_embed,
    "vertex_predict": op_vertex_predict,
    "invoke": op_invoke,
}
