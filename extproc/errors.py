"""Errors as the client's API shapes them: OpenAI's or Anthropic's error JSON."""

from __future__ import annotations

import orjson

from extproc.translate.base import openai_error, openai_error_type

_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    """An error the gateway answers itself, before or instead of a provider."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_body(
    api: str, status: int, message: str, code: str | None = None, param: str | None = None
) -> bytes:
    if api == "messages":
        type_ = _ANTHROPIC_TYPE.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})
    return orjson.dumps(openai_error(message, openai_error_type(status), code, param))
