"""INTERIM (replaced by the translator work): token usage from provider-native bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .sse import SSEDecoder


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _i(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def usage_of(fmt: str, body: dict[str, Any]) -> tuple[Usage | None, str | None]:
    u = body.get("usage") if isinstance(body.get("usage"), dict) else None
    model = body.get("model") if isinstance(body.get("model"), str) else None
    if fmt in ("openai", "openai-embeddings") and u:
        return Usage(_i(u.get("prompt_tokens")), _i(u.get("completion_tokens"))), model
    if fmt == "anthropic" and u:
        cr, cw = _i(u.get("cache_read_input_tokens")), _i(u.get("cache_creation_input_tokens"))
        return Usage(_i(u.get("input_tokens")) + cr + cw, _i(u.get("output_tokens")), cr, cw), model
    if fmt == "gemini" and isinstance(body.get("usageMetadata"), dict):
        m = body["usageMetadata"]
        return Usage(_i(m.get("promptTokenCount")), _i(m.get("candidatesTokenCount"))), body.get(
            "modelVersion"
        )
    if fmt == "bedrock" and u:
        return Usage(_i(u.get("inputTokens")), _i(u.get("outputTokens"))), None
    return None, model


class AnthropicStreamObserver:
    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.usage: Usage | None = None
        self.response_model: str | None = None

    def _look(self, events: list[Any]) -> None:
        for e in events:
            try:
                d = orjson.loads(e.data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(d, dict):
                continue
            if d.get("type") == "message_start" and isinstance(d.get("message"), dict):
                msg = d["message"]
                self.response_model = msg.get("model")
                b, _ = usage_of("anthropic", {"usage": msg.get("usage") or {}})
                self.usage = b
            elif d.get("type") == "message_delta" and isinstance(d.get("usage"), dict) and self.usage:
                self.usage.output_tokens = _i(d["usage"].get("output_tokens"))

    def feed(self, chunk: bytes) -> bytes:
        self._look(self._sse.feed(chunk))
        return chunk

    def finish(self) -> bytes:
        self._look(self._sse.flush())
        return b""
