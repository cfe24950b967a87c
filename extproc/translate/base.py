"""Types shared by the translators.

A translator is pure: dicts or bytes in, dicts or bytes out, no I/O, no clock
reads except through arguments, so each one is tested from fixtures alone.

Each provider module (``anthropic``, ``gemini``, ``bedrock``, ``openai``) offers:

- ``chat_request(req: dict, model: str) -> dict``: an OpenAI chat.completions
  request (already parsed) as this provider's request body, for ``model``.
- ``chat_response(resp: dict, model: str) -> dict``: the provider's
  non-streaming response as an OpenAI ``chat.completion`` (with ``usage``).
- ``error_response(status: int, body: bytes) -> tuple[int, dict]``: a provider
  error as ``(http status, OpenAI error JSON)``, keeping the provider's message.
- ``ChatStream(model: str, include_usage: bool)``: ``feed(chunk) -> bytes`` and
  ``finish() -> bytes``; turns the provider's stream, split anywhere, into
  OpenAI ``chat.completion.chunk`` SSE ending in ``data: [DONE]``. As it goes it
  exposes ``usage`` (a ``usage.Usage``) and ``response_model``, read from the
  provider's own events; each is None until the provider says.
- ``REQUEST_FIELDS``: the request fields it carries, drops or refuses (``fields.py``).

``usage.usage_of(fmt, body)`` reads usage and the model from any provider's
non-streamed body; ``extproc.tokens`` estimates a request's tokens before the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .usage import Usage

Json = dict[str, Any]


class TranslationError(ValueError):
    """The client's request cannot be expressed for this provider.

    The gateway answers it as a 400 ``invalid_request_error`` naming ``param``.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ChatStreamTranslator(Protocol):
    @property
    def usage(self) -> Usage | None: ...

    @property
    def response_model(self) -> str | None: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def openai_error(message: str, type_: str, code: str | int | None = None, param: str | None = None) -> Json:
    """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# OpenAI's error ``type`` for each HTTP status, as the OpenAI API uses them.
OPENAI_ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_error_type(status: int) -> str:
    if status in OPENAI_ERROR_TYPE_BY_STATUS:
        return OPENAI_ERROR_TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"
