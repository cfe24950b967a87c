"""OpenAI-compatible upstreams (OpenAI, Azure OpenAI, others): passthrough plus accounting."""

from __future__ import annotations

import orjson

from . import common as c
from .base import Json, openai_error, openai_error_type
from .sse import SSEDecoder, SSEEvent


def chat_request(req: Json, model: str) -> Json:
    """The request with ``model`` set (a shallow copy), otherwise as the client sent it.

    The answer passes through untranslated (no gRPC round trip for it), so the
    stream options stay the client's: forcing ``include_usage`` would hand it a
    usage chunk it did not ask for. ``ChatStream`` can still drop such a chunk
    for callers that force it.
    """
    body = dict(req)
    body["model"] = model
    return body


def chat_response(resp: Json, model: str, *, created: int = 0) -> Json:
    return resp


def error_response(status: int, body: bytes) -> tuple[int, Json]:
    """Keep an OpenAI-shaped error; wrap anything else (text, HTML, other JSON) as one."""
    parsed = c.load_json(body)
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # some compatible servers wrap the error in a list
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return status, openai_error(
            str(err["message"]),
            err.get("type") or openai_error_type(status),
            err.get("code"),
            err.get("param"),
        )
    if isinstance(err, str) and err:
        return status, openai_error(err, openai_error_type(status))
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return status, openai_error(parsed["message"], openai_error_type(status), parsed.get("code"))
    return status, openai_error(c.body_text(status, body), openai_error_type(status))


def _usage_only(chunk: Json) -> bool:
    return chunk.get("choices") == [] and chunk.get("usage") is not None


class ChatStream:
    """Forwards an OpenAI SSE stream, reading ``usage`` and the model on the way.

    With ``include_usage`` the bytes go out exactly as received. Without it, whole
    events are re-framed as they complete so the usage-only chunk can be dropped.
    """

    def __init__(self, model: str, include_usage: bool, created: int = 0) -> None:
        self.response_model: str = model
        self.usage: Json | None = None
        self._include_usage = include_usage
        self._sse = SSEDecoder()
        self._model_seen = False

    def feed(self, chunk: bytes) -> bytes:
        events = self._sse.feed(chunk)
        if self._include_usage:
            for event in events:
                self._inspect(event.data)
            return chunk
        return self._reframe(events)

    def finish(self) -> bytes:
        events = self._sse.flush()
        if self._include_usage:
            for event in events:
                self._inspect(event.data)
            return b""
        return self._reframe(events)

    def _reframe(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            chunk = self._inspect(event.data)
            if chunk is not None and _usage_only(chunk):
                continue
            if event.event:
                out += b"event: " + event.event.encode() + b"\n"
            out += b"data: " + event.data.replace(b"\n", b"\ndata: ") + b"\n\n"
        return bytes(out)

    def _inspect(self, data: bytes) -> Json | None:
        """Parse only the events that matter: the first one (model) and usage carriers."""
        if self._model_seen and not _may_carry_usage(data):
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None  # [DONE] and anything else that is not JSON
        if not isinstance(chunk, dict):
            return None
        if not self._model_seen and chunk.get("model"):
            self.response_model, self._model_seen = chunk["model"], True
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        return chunk


def _may_carry_usage(data: bytes) -> bool:
    at = data.rfind(b'"usage"')
    if at < 0:
        return False
    return not data[at + 7 :].lstrip(b" :").startswith(b"null")
