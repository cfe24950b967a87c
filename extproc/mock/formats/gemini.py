"""Gemini / Vertex AI wire format: GenerateContentResponse, streams, Google errors and embeddings."""

from __future__ import annotations

import orjson

from extproc.mock.conversation import JSON, Reply, pieces_of, word_count

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
    pieces = pieces_of(reply)
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
