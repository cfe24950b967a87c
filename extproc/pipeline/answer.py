"""Reading the provider's answer: translated back to the client's format, usage taken on the way.

Three ways an answer comes back, decided at the response headers:
- translated (the provider speaks another format): every byte is rewritten;
- observed (same format): bytes pass unchanged, usage and model are read; an OpenAI
  stream whose usage chunk the gateway asked for and the client did not is re-framed
  without that chunk, so the client's stream is what it would have been;
- untouched (errors on native paths, passthrough APIs): Envoy is told not to send it.

Every stream the client gets, translated or observed, is plain SSE in whole events (a
gzip-encoded one is decoded), so the gateway can end it at any point with a well-formed error
event of its own (``end_with_error``; stream_errors.py).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from extproc import egress
from extproc.errors import GatewayError
from extproc.gateway import Upstream
from extproc.pipeline import stream_errors
from extproc.translate import anthropic, openai
from extproc.translate import usage as usage_mod
from extproc.translate.messages_common import TRUNCATED

_TRUNCATED = TRUNCATED.encode()


def usage_format(up: Upstream, api: str, model: str) -> str | None:
    """The provider-native body format whose usage ``usage_of`` reads."""
    try:
        return usage_mod.native_format(up.kind, api, model)
    except ValueError:  # no embeddings family for this model: nothing to read
        return None


class ResponseReader:
    """One answer, read once. ``usage`` and ``response_model`` are set as the answer goes by."""

    def __init__(self, up: Upstream, api: str, attempt: egress.Attempt, client_wants_usage: bool) -> None:
        self.up = up
        self.api = api
        self.attempt = attempt
        self.client_wants_usage = client_wants_usage
        self.status = 0
        self.error_type: str | None = None
        self.stream: Any = None  # a stream translator or observer while streaming
        self.gunzip: Any = None  # a zlib decompressor while the provider's body is gzip-encoded
        self.usage: usage_mod.Usage | None = None
        self.header_usage: usage_mod.Usage | None = None
        self.response_model: str | None = None
        self.translating = attempt.answer is not None
        self._reading: Any = None  # the stream translator or observer, once a chunk came
        self.streaming = False
        # A stage may rewrite the answer (guardrails): it must see decoded bytes, and the
        # provider's content-length and content-encoding cannot stay.
        self.rewrites = False
        self.body_read = b""  # a whole answer, decoded (on_body): what the stages read
        self.ended = False  # the client's stream has had its last event
        self.truncated = False  # the provider's body ended before its last event (an error event went out)

    # --- headers ---------------------------------------------------------

    def on_headers(self, headers: dict[str, str]) -> tuple[str, dict[str, str], list[str]]:
        """The response body mode (NONE, STREAMED, BUFFERED) and header changes.

        Headers change here, not with the body: once the mode switches, Envoy has
        already let the response headers go and ignores header mutations on the body.
        """
        self.status = int(headers.get(":status", "0"))
        self.error_type = headers.get("x-amzn-errortype")
        # Bedrock's InvokeModel (Cohere, Nova embeddings) reports tokens in headers only.
        self.header_usage = usage_mod.from_bedrock_headers(headers) if self.up.kind == "bedrock" else None
        attempt = self.attempt
        if not self.translating:
            return self._observe_mode(headers)
        if not self._open_decoder(headers):
            raise GatewayError(
                502,
                f"the provider answered with content-encoding {headers['content-encoding']!r}, which the "
                "gateway cannot translate",
                code="bad_upstream_response",
            )
        if self.status == 200 and attempt.stream:
            assert attempt.answer is not None
            self.stream = attempt.answer.stream(egress.now())
            self.streaming = True
            return "STREAMED", {"content-type": "text/event-stream"}, ["content-length", "content-encoding"]
        # The translated body has another length: Envoy sends it chunked.
        return "BUFFERED", {"content-type": "application/json"}, ["content-length", "content-encoding"]

    def _observe_mode(self, headers: dict[str, str]) -> tuple[str, dict[str, str], list[str]]:
        if self.status != 200 or self.api not in ("completions", "messages", "embeddings"):
            return "NONE", {}, []
        if not self._open_decoder(headers):
            return "NONE", {}, []  # cannot be read; passes untouched, without usage
        if self.rewrites:
            # Decoded bytes go out (the stages read them), of a length only known at the end.
            remove = ["content-length", "content-encoding"] if self.gunzip is not None else ["content-length"]
            if not self.attempt.stream:
                return "BUFFERED", {}, remove
            self.streaming = True
            self.stream = (
                openai.ChatStream(self.attempt.model, self.client_wants_usage)
                if self.api == "completions"
                else anthropic.AnthropicStreamObserver()
            )
            return "STREAMED", {}, remove
        if not self.attempt.stream:
            return "BUFFERED", {}, []
        self.streaming = True
        if self.api == "completions":
            self.stream = openai.ChatStream(self.attempt.model, self.client_wants_usage)
        else:
            self.stream = anthropic.AnthropicStreamObserver()
        if self.gunzip is not None:
            return "STREAMED", {}, ["content-length", "content-encoding"]  # decoded, it goes out plain
        return "STREAMED", {}, []

    def _open_decoder(self, headers: dict[str, str]) -> bool:
        """False when the body's encoding is one the gateway cannot read (gzip is decoded)."""
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self.gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return encoding in ("identity", "gzip", "x-gzip")

    # --- body ------------------------------------------------------------

    def _decoded(self, chunk: bytes, end: bool) -> bytes:
        if self.gunzip is None:
            return chunk
        try:
            out: bytes = self.gunzip.decompress(chunk)
            return out + self.gunzip.flush() if end else out
        except zlib.error:
            raise GatewayError(
                502, "the provider's gzip-encoded answer is corrupt", code="bad_upstream_response"
            ) from None

    def on_chunk(self, chunk: bytes, end: bool) -> bytes:
        """A streamed chunk: the bytes for the client (whole events; b"" while one is incomplete)."""
        stream = self.stream
        if stream is None:  # already ended (an error event, or the gateway ended it)
            return b""
        self._reading = stream  # usage is read from it when the answer settles
        try:
            data = self._decoded(chunk, end)
        except GatewayError:
            # Mid-stream the status line is gone: the stream ends with an error event.
            self.stream = None
            return self._sent(stream.finish())
        out = stream.feed(data) if data else b""
        if end:
            out = self._sent(out)
            tail = stream.finish()
            # The translators end a body that stopped early with their "ended early" error event.
            self.truncated = not self.ended and _TRUNCATED in tail
            out += tail
            self.settle()
        return self._sent(out)

    def _sent(self, out: bytes) -> bytes:
        if out and not self.ended and stream_errors.has_ending(self.api, out):
            self.ended = True
        return out

    def end_with_error(self, message: str, code: str, anthropic_type: str) -> bytes:
        """The bytes that end the client's stream now (b"" if its last event already went out)."""
        self.settle()
        self.stream = None
        if self.ended:
            return b""
        self.ended = True
        return stream_errors.stream_error(self.api, message, code, anthropic_type)

    def settle(self) -> None:
        """Take usage and model from the stream read so far (its end, or where it was cut)."""
        stream = self._reading
        if stream is None:
            return
        usage = getattr(stream, "usage", None)
        if isinstance(usage, usage_mod.Usage):
            self.usage = usage
        model = getattr(stream, "response_model", None)
        self.response_model = model or self.attempt.model

    def on_body(self, body: bytes) -> tuple[bytes | None, dict[str, str]]:
        """A whole answer: the translated body (None: unchanged) and headers to set."""
        attempt = self.attempt
        decoded = self.body_read = self._decoded(body, True)
        if self.status == 200:
            parsed = _json(decoded, strict=self.translating)
            if parsed is not None:
                self._take_usage(parsed)
            if not self.translating:
                if self.rewrites and self.gunzip is not None:
                    return decoded, {"content-length": str(len(decoded))}  # the stages read it decoded
                return None, {}
            assert attempt.answer is not None and parsed is not None
            out = orjson.dumps(attempt.answer.response(parsed, egress.now()))
        else:
            assert attempt.answer is not None
            _, err = attempt.answer.error(self.status, decoded, self.error_type)
            out = orjson.dumps(err)
        return out, {"content-type": "application/json", "content-length": str(len(out))}

    def _take_usage(self, parsed: dict[str, Any]) -> None:
        fmt = usage_format(self.up, self.api, self.attempt.model)
        if fmt is None:
            return
        usage, model = usage_mod.usage_of(fmt, parsed)
        self.usage = usage or self.header_usage
        self.response_model = model or self.attempt.model


def _json(body: bytes, strict: bool) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        if strict:
            raise GatewayError(
                502, "the provider answered with a body that is not JSON", code="bad_upstream_response"
            ) from None
        return None
    return parsed if isinstance(parsed, dict) else None
