"""OpenAI / Azure OpenAI wire format: chat completions, SSE chunks, errors, embeddings, models."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from extproc.mock.conversation import JSON, Reply, json_pieces, pieces_of
from extproc.mock.formats.common import CREATED, DEFAULT_EMBEDDING_DIMS, embedding_tokens, embedding_vector

OPENAI_DONE = b"data: [DONE]\n\n"
_OPENAI_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


def _sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def openai_usage(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _openai_tool_calls(reply: Reply) -> list[JSON]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in reply.tool_calls
    ]


def openai_response(reply: Reply, model: str) -> bytes:
    message: JSON = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = _openai_tool_calls(reply)
    return orjson.dumps(
        {
            "id": reply.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _OPENAI_FINISH[reply.stop],
                }
            ],
            "usage": openai_usage(reply),
            "system_fingerprint": None,
        }
    )


def openai_stream(reply: Reply, model: str, include_usage: bool) -> list[bytes]:
    """Chunks up to (and including) the usage chunk; the caller appends ``[DONE]`` on success."""
    base = {"id": reply.id, "object": "chat.completion.chunk", "created": CREATED, "model": model}

    def chunk(delta: JSON, finish: str | None = None) -> bytes:
        body: JSON = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None  # only the final usage chunk carries numbers
        return _sse_data(body)

    events = [chunk({"role": "assistant", "content": ""})]
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        events.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
            for frag in json_pieces(call.arguments)
        )
    if not reply.tool_calls:
        events.extend(chunk({"content": piece}) for piece in pieces_of(reply))
    events.append(chunk({}, _OPENAI_FINISH[reply.stop]))
    if include_usage:
        events.append(_sse_data({**base, "choices": [], "usage": openai_usage(reply)}))
    return events


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    413: ("invalid_request_error", None, "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def openai_error(status: int, message: str | None = None, param: str | None = None) -> bytes:
    kind, code, default = _OPENAI_ERRORS.get(
        status, ("invalid_request_error" if status < 500 else "server_error", None, f"Mock error {status}.")
    )
    return orjson.dumps(
        {"error": {"message": message or default, "type": kind, "param": param, "code": code}}
    )


def openai_stream_error() -> bytes:
    return _sse_data(
        {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    )


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [" ".join(map(str, raw))]  # a single pre-tokenised input
    if isinstance(raw, list):
        return [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw if isinstance(x, (str, list))]
    return []


def openai_embeddings(body: JSON, model: str) -> bytes:
    inputs = _embedding_inputs(body.get("input"))
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 8192 else DEFAULT_EMBEDDING_DIMS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dims)
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = embedding_tokens(inputs)
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


MOCK_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "mock-model")


OPENAI_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "mock"} for m in MOCK_MODELS],
    }
)
