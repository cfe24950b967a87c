"""The client's request checked once, at the edge, against the shape its API documents.

``validate(api, body)`` raises the gateway's 400 naming the parameter (OpenAI's ``param``,
or the path in Anthropic's message) for a value of the wrong type, a missing required key,
a role the API does not have, a model name too long to travel in a path, or nesting deeper
than the gateway can re-serialize. After it, translators and stages may rely on the types
of every key they read (``chat``, ``messages``, ``embeddings`` list them); the values'
meaning for a provider stays the translators' to judge.

Strict pydantic-core validation of TypedDicts: a few microseconds for a typical chat body.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from extproc.errors import GatewayError

from . import chat, embeddings, messages
from .errors import anthropic_message, anthropic_param, openai_message, openai_param, worst
from .shared import MAX_MODEL_CHARS

__all__ = ["MAX_DEPTH", "MAX_MODEL_CHARS", "check_depth", "validate"]

_SHAPES: dict[str, Any] = {
    "completions": chat.SHAPE,
    "messages": messages.SHAPE,
    "embeddings": embeddings.SHAPE,
}

# orjson serializes at most 254 nested levels (parsing takes 1024): a body between the two
# parsed fine and then failed to re-serialize as a 500. Translators nest a request's values a
# few levels deeper (a tool's schema inside Converse's toolConfig), so the gateway takes half.
MAX_DEPTH = 128
_ORJSON_DEPTH = 254


@functools.cache
def _adapter(api: str) -> TypeAdapter[Any]:
    return TypeAdapter(_SHAPES[api])


def warm_up() -> None:
    """Build the validators now, not on the first request (tens of milliseconds each)."""
    for api in _SHAPES:
        _adapter(api)


def validate(api: str, body: dict[str, Any]) -> None:
    """Raises GatewayError (400) naming the first malformed parameter of ``body``."""
    try:
        _adapter(api).validate_python(body)
    except ValidationError as exc:
        path, errors = worst(body, exc.errors(include_url=False))
        param = openai_param(path)
        message, code = openai_message(param, errors)
        if api == "messages":  # Anthropic's error has no param: the path leads its message
            param = anthropic_param(path)
            message = anthropic_message(param, errors)
        raise GatewayError(400, message, code=code, param=param) from None


def check_depth(raw: bytes, body: Any) -> None:
    """Refuses a body nested deeper than MAX_DEPTH levels.

    A body with fewer brackets than that cannot be deeper, which is nearly every body and
    costs two byte counts. Otherwise orjson, in C, decides: wrapped in enough levels that
    serializing fails exactly when the body is too deep.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    wrapped = body
    for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        raise GatewayError(
            400,
            f"the request body is nested too deeply (at most {MAX_DEPTH} levels of arrays and objects)",
            code="invalid_json",
        ) from None
