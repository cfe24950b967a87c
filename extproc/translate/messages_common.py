"""Pieces shared by the Anthropic Messages client-format translators (``messages*.py``).

The client speaks Anthropic Messages; these helpers build what it expects back:
the error body, the usage object and a well-formed event stream (``EventWriter``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import orjson

from . import common as c
from .base import Json
from .bedrock_response import bedrock_shape_name

# Anthropic's error types, each with the HTTP status Anthropic answers it with.
ERROR_TYPES: frozenset[str] = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# google.rpc.Code names (Gemini, Vertex) as Anthropic error types.
GOOGLE_STATUS_TYPES: dict[str, str] = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "NOT_FOUND": "not_found_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
    "DEADLINE_EXCEEDED": "timeout_error",
    "UNAVAILABLE": "overloaded_error",
    "INTERNAL": "api_error",
    "UNKNOWN": "api_error",
}

# Bedrock exception shape names as Anthropic error types.
BEDROCK_EXCEPTION_TYPES: dict[str, str] = {
    "ValidationException": "invalid_request_error",
    "AccessDeniedException": "permission_error",
    "UnrecognizedClientException": "authentication_error",
    "ExpiredTokenException": "authentication_error",
    "ResourceNotFoundException": "not_found_error",
    "ModelTimeoutException": "timeout_error",
    "ThrottlingException": "rate_limit_error",
    "ServiceQuotaExceededException": "rate_limit_error",
    # "The model is not ready": a retry later succeeds, which is what overloaded means.
    "ModelNotReadyException": "overloaded_error",
    "ServiceUnavailableException": "overloaded_error",
    "ModelErrorException": "api_error",
    "ModelStreamErrorException": "api_error",
    "InternalServerException": "api_error",
}

# OpenAI error types that are not already Anthropic's (see base.OPENAI_ERROR_TYPE_BY_STATUS).
_OPENAI_TYPES: dict[str, str] = {
    "server_error": "api_error",
    "service_unavailable": "overloaded_error",
    "conflict_error": "api_error",
    "insufficient_quota": "rate_limit_error",
}


def error_type(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(type_: str, message: str) -> Json:
    return {"type": "error", "error": {"type": type_, "message": message}}


def error_response(status: int, body: bytes, error_type_: str | None = None) -> tuple[int, Json]:
    """Any provider's error body (Anthropic, OpenAI, Google, Bedrock, text) as Anthropic's error.

    The provider's message and status are kept; the type comes from the body when it
    names one we can map, else from the status. ``error_type_`` is Bedrock's
    ``x-amzn-ErrorType`` header when the caller has it.
    """
    parsed = c.load_json(body)
    if isinstance(parsed, list) and parsed:  # Gemini's JSON-array form and some servers wrap errors
        parsed = parsed[0]
    if _is_anthropic_error(parsed):
        return status, parsed  # already the client's shape (with request_id and all)
    type_, message = _type_and_message(parsed, error_type_) if isinstance(parsed, dict) else (None, None)
    if error_type_ and type_ is None:
        type_ = BEDROCK_EXCEPTION_TYPES.get(bedrock_shape_name(error_type_))
    text = str(message) if message else c.body_text(status, body)
    return status, error_body(type_ or error_type(status), text)


def _is_anthropic_error(parsed: Any) -> bool:
    err = parsed.get("error") if isinstance(parsed, dict) and parsed.get("type") == "error" else None
    return isinstance(err, dict) and err.get("type") in ERROR_TYPES and isinstance(err.get("message"), str)


def _type_and_message(parsed: Json, header_type: str | None) -> tuple[str | None, Any]:
    err = parsed.get("error")
    if isinstance(err, dict):
        # Anthropic: {"type": "error", "error": {"type", "message"}}; OpenAI and Google:
        # {"error": {"message", "type" | "status"}}.
        kind = err.get("type")
        google = err.get("status")
        if isinstance(google, str) and google in GOOGLE_STATUS_TYPES:
            return GOOGLE_STATUS_TYPES[google], err.get("message")
        if isinstance(kind, str) and kind in ERROR_TYPES and parsed.get("type") == "error":
            return kind, err.get("message")  # Anthropic's shape without a message string
        return None, err.get("message")
    if isinstance(err, str):
        return None, err
    # Bedrock: {"message": ...} with the shape in x-amzn-ErrorType or "__type".
    shape = header_type or parsed.get("__type")
    type_ = BEDROCK_EXCEPTION_TYPES.get(bedrock_shape_name(shape)) if isinstance(shape, str) else None
    return type_, parsed.get("message") or parsed.get("Message")


def stream_error_type(err: Json) -> str:
    """The Anthropic type of an OpenAI-style in-stream error ``{"message", "type", "code"}``.

    Our own chunk translators put Google's status name or Anthropic's type in ``code``.
    """
    code, kind = err.get("code"), err.get("type")
    if isinstance(code, str) and code in GOOGLE_STATUS_TYPES:
        return GOOGLE_STATUS_TYPES[code]
    for value in (code, kind):
        if isinstance(value, str) and value in ERROR_TYPES:
            return value
    if isinstance(kind, str) and kind in _OPENAI_TYPES:
        return _OPENAI_TYPES[kind]
    return "api_error"


# ---------------------------------------------------------------- usage


def count(value: Any) -> int:
    """A token count from a provider field; anything but a non-negative int counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def text(value: Any) -> str:
    """A string field of a provider event; another type means the event is malformed."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def usage(input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0) -> Json:
    """Anthropic usage: ``input_tokens`` exclude cache reads and writes, as Anthropic counts them."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def message(
    id_: str,
    model: str,
    content: list[Json],
    stop_reason: str | None,
    stop_sequence: str | None,
    usage_: Json,
) -> Json:
    return {
        "id": id_,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_,
    }


# ---------------------------------------------------------------- stream


def event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def error_event(type_: str, message: str) -> bytes:
    return event("error", error_body(type_, message))


TRUNCATED = "upstream stream ended early"
MALFORMED = "malformed upstream stream event"


class EventWriter:
    """Builds one well-formed Anthropic message stream.

    ``message_start`` comes first, content blocks get consecutive indices and each is
    closed before the next opens (clients rebuild the message by index), and
    ``message_delta`` + ``message_stop`` or a single ``error`` end it. A block is
    identified by a caller-chosen ``key`` so deltas find their block again.
    """

    __slots__ = ("_index", "_open", "done", "id", "key", "model", "started", "usage")

    def __init__(self, id_: str, model: str) -> None:
        self.id = id_
        self.model = model
        self.started = False
        self.done = False
        self.key: Hashable | None = None  # the open block's key
        self.usage: Json | None = None  # what message_delta reported, for accounting
        self._index = -1
        self._open = False

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        # Providers other than Anthropic report input tokens only at the end; they go
        # out in message_delta, whose usage clients merge over this one.
        msg = message(self.id, self.model, [], None, None, {"input_tokens": 0, "output_tokens": 0})
        return event("message_start", {"type": "message_start", "message": msg})

    def open(self, key: Hashable, block: Json) -> bytes:
        """Closes the open block and starts ``block`` under ``key``."""
        out = self.start() + self.close()
        self._index += 1
        self._open, self.key = True, key
        return out + event(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def ensure(self, key: Hashable, block: Json) -> bytes:
        """Opens ``block`` unless the block under ``key`` is the open one."""
        return b"" if self._open and self.key == key else self.open(key, block)

    def delta(self, delta: Json) -> bytes:
        if not self._open:
            raise ValueError("content delta outside a content block")
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def close(self) -> bytes:
        if not self._open:
            return b""
        self._open, self.key = False, None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def finish(self, stop_reason: str, stop_sequence: str | None, usage_: Json) -> bytes:
        out = self.start() + self.close()
        self.done = True
        self.usage = usage_
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out += event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage_})
        return out + event("message_stop", {"type": "message_stop"})

    def error(self, type_: str, message_: str) -> bytes:
        """Ends the stream with an error event; Anthropic sends it as is, even mid-block."""
        self.done = True
        return error_event(type_, message_)
