"""Errors as the client's API shapes them: OpenAI's or Anthropic's error JSON."""

from __future__ import annotations

import orjson

from extproc.translate import messages_common
from extproc.translate.base import openai_error, openai_error_type


class GatewayError(Exception):
    """An error the gateway answers itself, before or instead of a provider."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers  # extra response headers (retry-after, rate limit state)


def error_body(
    api: str, status: int, message: str, code: str | None = None, param: str | None = None
) -> bytes:
    if api == "messages":
        return orjson.dumps(messages_common.error_body(messages_common.error_type(status), message))
    return orjson.dumps(openai_error(message, openai_error_type(status), code, param))
