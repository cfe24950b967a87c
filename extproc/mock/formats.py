"""Per-provider response, stream and error builders for the mock provider.

Every builder returns ready-to-send bytes (streams: one ``bytes`` per event) so the server only writes.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from typing import Any

import orjson

from extproc.mock import eventstream
from extproc.mock.conversation import JSON, Reply, json_pieces, text_pieces, word_count

CREATED = 1700000000  # fixed so responses are byte-for-byte reproducible

# --- OpenAI / Azure -----------------------------------------------------------------------------------

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
        events.extend(chunk({"content": piece}) for piece in text_pieces(reply.text))
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


# --- Embeddings / models ------------------------------------------------------------------------------

DEFAULT_EMBEDDING_DIMS = 16


def embedding_vector(text: str, dims: int) -> list[float]:
    """Deterministic pseudo-embedding in [-1, 1] derived from SHA-256 of the text."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(round(b / 127.5 - 1.0, 6) for b in digest)
        counter += 1
    return out[:dims]


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


def embedding_tokens(texts: list[str]) -> int:
    return max(1, sum(word_count(t) for t in texts))


def gemini_embeddings(vectors: list[list[float]]) -> bytes:
    """``batchEmbedContents``: one ContentEmbedding per request, in order; Gemini reports no tokens."""
    return orjson.dumps({"embeddings": [{"values": v} for v in vectors]})


def gemini_embedding(vector: list[float]) -> bytes:
    """``embedContent``: a single ContentEmbedding."""
    return orjson.dumps({"embedding": {"values": vector}})


def vertex_text_embeddings(texts: list[str], vectors: list[list[float]]) -> bytes:
    predictions = [
        {"embeddings": {"statistics": {"truncated": False, "token_count": word_count(t)}, "values": v}}
        for t, v in zip(texts, vectors, strict=True)
    ]
    return orjson.dumps(
        {"predictions": predictions, "metadata": {"billableCharacterCount": sum(len(t) for t in texts)}}
    )


def vertex_multimodal_embeddings(vectors: list[list[float]]) -> bytes:
    return orjson.dumps({"predictions": [{"textEmbedding": v} for v in vectors]})


def titan_embedding(text: str, vector: list[float], types: list[str] | None) -> bytes:
    """Titan v2 (``types`` given: embeddingsByType, always present) or G1/image (``types`` None)."""
    body: JSON = {"embedding": vector, "inputTextTokenCount": word_count(text)}
    if types is not None:
        by_type: JSON = {}
        if "float" in types:
            by_type["float"] = vector
        if "binary" in types:
            by_type["binary"] = [1 if x > 0 else 0 for x in vector]  # one 0/1 per dimension
        body["embeddingsByType"] = by_type
    return orjson.dumps(body)


def _pack_bits(vector: list[float], signed: bool) -> list[int]:
    out = []
    for i in range(0, len(vector) - len(vector) % 8, 8):
        byte = sum(1 << (7 - j) for j, x in enumerate(vector[i : i + 8]) if x > 0)
        out.append(byte - 128 if signed else byte)
    return out


_COHERE_TYPES: dict[str, Callable[[list[float]], list[Any]]] = {
    "float": lambda v: v,
    "int8": lambda v: [round(x * 127) for x in v],
    "uint8": lambda v: [round((x + 1) * 127.5) for x in v],
    "binary": lambda v: _pack_bits(v, signed=True),
    "ubinary": lambda v: _pack_bits(v, signed=False),
}


def cohere_embeddings(
    id_: str, texts: list[str], vectors: list[list[float]], types: list[str] | None
) -> bytes:
    """Cohere Embed on Bedrock: plain float lists, or ``embeddings_by_type`` when types were asked."""
    body: JSON = {"id": id_, "texts": texts}
    if types:
        body["embeddings"] = {t: [_COHERE_TYPES[t](v) for v in vectors] for t in types}
        body["response_type"] = "embeddings_by_type"
    else:
        body["embeddings"] = vectors
        body["response_type"] = "embeddings_floats"
    return orjson.dumps(body)


def nova_embeddings(embedding_type: str, vector: list[float]) -> bytes:
    return orjson.dumps({"embeddings": [{"embeddingType": embedding_type, "embedding": vector}]})


MOCK_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "mock-model")

OPENAI_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "mock"} for m in MOCK_MODELS],
    }
)

# --- Anthropic ----------------------------------------------------------------------------------------

_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def anthropic_content(reply: Reply) -> list[JSON]:
    if reply.tool_calls:
        return [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.args} for c in reply.tool_calls]
    return [{"type": "text", "text": reply.text}]


def _anthropic_usage(reply: Reply, output_tokens: int) -> JSON:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def anthropic_response(reply: Reply, model: str) -> bytes:
    return orjson.dumps(
        {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": anthropic_content(reply),
            "stop_reason": _ANTHROPIC_STOP[reply.stop],
            "stop_sequence": None,
            "usage": _anthropic_usage(reply, reply.output_tokens),
        }
    )


def anthropic_event(event: str, data: JSON) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_PING = anthropic_event("ping", {"type": "ping"})
MESSAGE_STOP = anthropic_event("message_stop", {"type": "message_stop"})


def _anthropic_block_events(index: int, block: JSON) -> list[bytes]:
    if block["type"] == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": frag}
            for frag in json_pieces(orjson.dumps(block["input"]).decode())
        ]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in text_pieces(block["text"])]
    events = [
        anthropic_event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        )
    ]
    if index == 0:
        events.append(_PING)  # the real API pings right after the first block opens
    events.extend(
        anthropic_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    )
    events.append(anthropic_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def anthropic_stream(reply: Reply, model: str) -> list[bytes]:
    message = {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(reply, 1),
    }
    events = [anthropic_event("message_start", {"type": "message_start", "message": message})]
    for index, block in enumerate(anthropic_content(reply)):
        events.extend(_anthropic_block_events(index, block))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _ANTHROPIC_STOP[reply.stop], "stop_sequence": None},
        "usage": _anthropic_usage(reply, reply.output_tokens),  # cumulative totals
    }
    events.append(anthropic_event("message_delta", delta))
    events.append(MESSAGE_STOP)
    return events


_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(status: int, message: str | None = None) -> bytes:
    kind, default = _ANTHROPIC_ERRORS.get(
        status, ("invalid_request_error" if status < 500 else "api_error", f"Mock error {status}.")
    )
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message or default}})


def anthropic_stream_error() -> bytes:
    return anthropic_event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )


# --- Gemini / Vertex Gemini ---------------------------------------------------------------------------

_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def _gemini_usage(prompt: int, candidates: int) -> JSON:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


def _gemini_chunk(reply: Reply, model: str, parts: list[JSON], finish: str | None, out_tokens: int) -> JSON:
    candidate: JSON = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": _gemini_usage(reply.input_tokens, out_tokens),
        "modelVersion": model,
        "responseId": reply.id,
    }


def _gemini_parts(reply: Reply) -> list[JSON]:
    if reply.tool_calls:
        return [{"functionCall": {"name": c.name, "args": c.args}} for c in reply.tool_calls]
    return [{"text": reply.text}]


def gemini_response(reply: Reply, model: str) -> bytes:
    finish = _GEMINI_FINISH[reply.stop]
    return orjson.dumps(_gemini_chunk(reply, model, _gemini_parts(reply), finish, reply.output_tokens))


def gemini_stream_payloads(reply: Reply, model: str) -> list[bytes]:
    """JSON bodies of each streamed GenerateContentResponse; usage is cumulative, final on the last."""
    finish = _GEMINI_FINISH[reply.stop]
    if reply.tool_calls:
        return [orjson.dumps(_gemini_chunk(reply, model, _gemini_parts(reply), finish, reply.output_tokens))]
    pieces = text_pieces(reply.text)
    payloads: list[bytes] = []
    seen = 0
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        seen = reply.output_tokens if last else min(reply.output_tokens, seen + word_count(piece))
        payloads.append(
            orjson.dumps(_gemini_chunk(reply, model, [{"text": piece}], finish if last else None, seen))
        )
    return payloads


def gemini_sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\r\n\r\n"


def gemini_json_array(payloads: list[bytes]) -> list[bytes]:
    """Stream without ``alt=sse``: one JSON array written element by element."""
    if not payloads:
        return [b"[]"]
    out = [b"[" + payloads[0]]
    out.extend(b",\r\n" + p for p in payloads[1:])
    out.append(b"]")
    return out


_GOOGLE_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The request was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "An internal error has occurred."),
    501: ("UNIMPLEMENTED", "Not implemented."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def google_error_obj(status: int, message: str | None = None) -> JSON:
    name, default = _GOOGLE_STATUS.get(
        status, ("UNKNOWN" if status >= 500 else "FAILED_PRECONDITION", f"Mock error {status}.")
    )
    return {"error": {"code": status, "message": message or default, "status": name}}


def google_error(status: int, message: str | None = None) -> bytes:
    return orjson.dumps(google_error_obj(status, message))


def gemini_stream_error_payload() -> bytes:
    return orjson.dumps(google_error_obj(503))


# --- Bedrock Converse ---------------------------------------------------------------------------------

_BEDROCK_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_BEDROCK_PAD = "abcdefghijklmnopqrstuvwxyz"


def _bedrock_usage(reply: Reply) -> JSON:
    return {
        "inputTokens": reply.input_tokens,
        "outputTokens": reply.output_tokens,
        "totalTokens": reply.total_tokens,
    }


def bedrock_response(reply: Reply) -> bytes:
    if reply.tool_calls:
        content = [
            {"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.args}} for c in reply.tool_calls
        ]
    else:
        content = [{"text": reply.text}]
    return orjson.dumps(
        {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _BEDROCK_STOP[reply.stop],
            "usage": _bedrock_usage(reply),
            "metrics": {"latencyMs": 1},
        }
    )


def _bedrock_event(event_type: str, payload: JSON) -> bytes:
    # Real Bedrock pads payloads with a "p" field to mask lengths; clients must ignore it.
    return eventstream.event_message(
        event_type, orjson.dumps({**payload, "p": _BEDROCK_PAD[: 1 + len(event_type) % 20]})
    )


def _bedrock_tool_events(index: int, call_id: str, name: str, arguments: str) -> list[bytes]:
    start = {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": call_id, "name": name}}}
    events = [_bedrock_event("contentBlockStart", start)]
    events.extend(
        _bedrock_event(
            "contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": frag}}}
        )
        for frag in json_pieces(arguments)
    )
    events.append(_bedrock_event("contentBlockStop", {"contentBlockIndex": index}))
    return events


def bedrock_stream(reply: Reply) -> list[bytes]:
    events = [_bedrock_event("messageStart", {"role": "assistant"})]
    for index, call in enumerate(reply.tool_calls):
        events.extend(_bedrock_tool_events(index, call.id, call.name, call.arguments))
    if not reply.tool_calls:
        events.extend(
            _bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            for piece in text_pieces(reply.text)
        )
        events.append(_bedrock_event("contentBlockStop", {"contentBlockIndex": 0}))
    events.append(_bedrock_event("messageStop", {"stopReason": _BEDROCK_STOP[reply.stop]}))
    events.append(_bedrock_event("metadata", {"usage": _bedrock_usage(reply), "metrics": {"latencyMs": 1}}))
    return events


_BEDROCK_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested resource could not be found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "The service is temporarily unavailable."),
}
_AMZN_ERROR_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


def bedrock_error(status: int, message: str | None = None) -> tuple[bytes, str]:
    """Return (body, x-amzn-ErrorType header value)."""
    name, default = _BEDROCK_ERRORS.get(
        status,
        ("ValidationException" if status < 500 else "InternalServerException", f"Mock error {status}."),
    )
    return orjson.dumps({"message": message or default}), name + _AMZN_ERROR_SUFFIX


def bedrock_stream_error() -> bytes:
    return eventstream.exception_message(
        "throttlingException",
        orjson.dumps({"message": "Too many requests, please wait before trying again."}),
    )
