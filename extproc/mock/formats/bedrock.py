"""Amazon Bedrock wire format: Converse, its event stream, errors and InvokeModel embeddings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from extproc.mock import eventstream
from extproc.mock.conversation import JSON, Reply, json_pieces, pieces_of, word_count

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
            for piece in pieces_of(reply)
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
