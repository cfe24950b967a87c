"""Anthropic Messages wire format: messages, SSE events and errors."""

from __future__ import annotations

import orjson

from extproc.mock.conversation import JSON, Reply, json_pieces, text_pieces

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


def _anthropic_block_events(index: int, block: JSON, pieces: list[str] | None = None) -> list[bytes]:
    if block["type"] == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": frag}
            for frag in json_pieces(orjson.dumps(block["input"]).decode())
        ]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces or text_pieces(block["text"])]
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
        events.extend(
            _anthropic_block_events(index, block, reply.pieces if block["type"] == "text" else None)
        )
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
