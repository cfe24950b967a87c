"""OpenAI-compatible upstreams (OpenAI, Azure OpenAI, others): passthrough plus accounting."""

from __future__ import annotations

import re

import orjson

from . import common as c
from .base import Json, openai_error, openai_error_type
from .sse import DONE, RawEvents, SSEDecoder, SSEEvent, complete_tail, truncated_frames
from .usage import Usage, from_openai


def chat_request(req: Json, model: str) -> Json:
    """The request with ``model`` set (a shallow copy), otherwise as the client sent it.

    The stream options stay the client's here; ``ask_usage`` adds ``include_usage``
    for callers that account for every stream, and ``ChatStream(include_usage=False)``
    then gives the client the stream it would have had without it.
    """
    body = dict(req)
    body["model"] = model
    return body


def ask_usage(body: Json) -> Json:
    """A streamed request asking for the usage chunk (a copy; ``body`` itself when nothing changes)."""
    options = body.get("stream_options")
    options = options if isinstance(options, dict) else {}
    if not body.get("stream") or options.get("include_usage") is True:
        return body
    return {**body, "stream_options": {**options, "include_usage": True}}


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


# ``"usage": null`` with the comma that joins it to its neighbour, as OpenAI writes it on
# every chunk once ``include_usage`` is on (and never without it).
_USAGE_KEY = re.compile(rb'"usage"\s*:')
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')


class ChatStream:
    """Forwards an OpenAI SSE stream, reading ``usage`` and the model on the way.

    Bytes go out whole event by whole event (a partial event waits for its end), so the
    gateway can always end the client's stream with a well-formed event of its own. With
    ``include_usage`` the events go out exactly as received. Without it the gateway asked
    for usage on the client's behalf, so what the client gets is the stream it would have
    had: the usage-only chunk is left out and the ``"usage": null`` member OpenAI adds to
    every other chunk is removed; all other bytes (line endings, comments, spacing) pass
    unchanged.

    A stream that ends without ``[DONE]`` gets one, after a truncation error unless the
    provider's last event was an error (stream_errors.py: endings agree with the translators').

    ``usage`` is the provider's last reported total; ``response_model`` the model
    the first chunk names (None until one does).
    """

    def __init__(self, model: str, include_usage: bool, created: int = 0) -> None:
        self.response_model: str | None = None
        self.usage: Usage | None = None
        self._include_usage = include_usage
        self._sse = SSEDecoder()
        self._raw = RawEvents()
        self._model_seen = False
        self.done = False  # [DONE] went by
        self._errored = False  # the last event was an error
        self._finished = False  # a choice had its finish reason

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._filtered(raw, self._sse.feed(raw)) for raw in self._raw.feed(chunk))

    def finish(self) -> bytes:
        raw = self._raw.flush()
        raw = complete_tail(raw)
        out = self._filtered(raw, self._sse.feed(raw) + self._sse.flush()) if raw else b""
        if self.done:
            return out
        self.done = True
        # An error, or a finish reason without [DONE] (some compatible servers): complete enough.
        return out + (DONE if self._errored or self._finished else truncated_frames())

    def _filtered(self, raw: bytes, events: list[SSEEvent]) -> bytes:
        """One whole event's bytes, as the client would have had them without forced usage."""
        if self._include_usage:
            for event in events:
                self._inspect(event.data)
            return raw
        for event in events:
            chunk = self._inspect(event.data)
            if chunk is not None and _usage_only(chunk):
                return b""
        if b'"usage"' in raw and len(_USAGE_KEY.findall(raw)) == 1:
            # One "usage" key only (a string "usage" is never followed by a colon): the
            # chunk's own member, so removing it with its comma keeps the JSON valid.
            raw = _NULL_USAGE.sub(b"", raw, count=1)
        return raw

    def _inspect(self, data: bytes) -> Json | None:
        """Parse only the events that matter: the first one (model) and usage carriers."""
        head = data.lstrip()[:1]
        if head != b"{":
            self.done = self.done or data.strip() == b"[DONE]"
            return None
        self._errored = data[:24].replace(b" ", b"").startswith(b'{"error"')
        self._finished = self._finished or _FINISHED.search(data) is not None
        if self._model_seen and not _may_carry_usage(data):
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None  # [DONE] and anything else that is not JSON
        if not isinstance(chunk, dict):
            return None
        model = chunk.get("model")
        if not self._model_seen and isinstance(model, str) and model:
            self.response_model, self._model_seen = model, True
        found = from_openai(chunk.get("usage"))
        if found is not None:
            self.usage = found  # a running total: the latest wins
        return chunk


def _may_carry_usage(data: bytes) -> bool:
    at = data.rfind(b'"usage"')
    if at < 0:
        return False
    return not data[at + 7 :].lstrip(b" :").startswith(b"null")
