"""Token usage in one shape for every provider, and readers for each provider's own.

``Usage`` counts as OpenTelemetry's GenAI conventions do (``gen_ai.usage.*``):

- ``input_tokens``: every input token the provider processed, cache reads and cache
  writes included (``gen_ai.usage.input_tokens``). OpenAI's ``prompt_tokens`` and
  Gemini's ``promptTokenCount`` already count this way; Anthropic's and Bedrock's
  ``input_tokens`` leave the cache out, so their cache counts are added.
- ``output_tokens``: every generated token, reasoning included
  (``gen_ai.usage.output_tokens``). Gemini reports thoughts apart from candidates, so
  they are added.
- ``cache_read_tokens``, ``cache_write_tokens``: the part of ``input_tokens`` read from
  or written to the provider's prompt cache (``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.usage.cache_creation.input_tokens``).
- ``reasoning_tokens``: the part of ``output_tokens`` spent thinking
  (``gen_ai.usage.reasoning.output_tokens``); 0 where the provider does not say
  (Anthropic and Bedrock bill thinking as output without a separate count).

Readers take the provider's usage object as it is on the wire and never raise: a
count that is not a non-negative integer counts as 0, and an absent usage object
gives None (the provider said nothing), not a zero Usage. Provider counters are
running totals, so stream readers SET the latest value and never add.

``usage_of(fmt, body)`` reads a whole non-streamed body; ``native_format(kind, api,
model)`` names the format a provider kind answers in; ``Observed`` reads a native
stream passed on untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ChatStreamTranslator

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_tokens": self.total_tokens}

    def openai(self) -> Json:
        """As OpenAI's ``usage`` object (the cache and reasoning details always present)."""
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cache_read_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def anthropic(self) -> Json:
        """As Anthropic's ``usage`` object, whose ``input_tokens`` exclude the cache."""
        uncached = max(self.input_tokens - self.cache_read_tokens - self.cache_write_tokens, 0)
        return {
            "input_tokens": uncached,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
        }


def count(value: Any) -> int:
    """A token count from a provider field; anything but a non-negative int counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def set_counters(into: Json, usage: Any) -> None:
    """Keeps the latest value of each integer counter in ``usage`` (running totals: set, never add)."""
    if isinstance(usage, dict):
        into.update((k, v) for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool))


# ---------------------------------------------------------------- chat usage objects


def from_openai(u: Any, *, billed_total: bool = True) -> Usage | None:
    """OpenAI ``usage`` (chat.completion, also Azure, vLLM and other compatible servers).

    Gemini's OpenAI-compatible endpoint leaves thinking out of ``completion_tokens``
    but not out of ``total_tokens`` (7 + 12 of 402). With ``billed_total`` (for
    accounting) what the total has beyond the input counts as output; without it
    (translating the answer for a client) output is ``completion_tokens`` as sent.
    """
    if not isinstance(u, dict):
        return None
    prompt = _dict(u.get("prompt_tokens_details"))
    completion = _dict(u.get("completion_tokens_details"))
    input_tokens = count(u.get("prompt_tokens"))
    output_tokens = count(u.get("completion_tokens"))
    if billed_total:
        output_tokens = max(output_tokens, count(u.get("total_tokens")) - input_tokens)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=count(prompt.get("cached_tokens")),
        # Not OpenAI's own field; our translators and some compatible servers report it.
        cache_write_tokens=count(prompt.get("cache_write_tokens")),
        reasoning_tokens=count(completion.get("reasoning_tokens")),
    )


def from_anthropic(u: Any) -> Usage | None:
    """Anthropic Messages ``usage`` (also Claude on Vertex and on Bedrock's invoke API)."""
    if not isinstance(u, dict):
        return None
    read = count(u.get("cache_read_input_tokens"))
    write = count(u.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=count(u.get("input_tokens")) + read + write,
        output_tokens=count(u.get("output_tokens")),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def from_gemini(meta: Any) -> Usage | None:
    """Gemini ``usageMetadata`` (AI Studio and Vertex).

    ``promptTokenCount`` includes cached content; tool-use prompt tokens are counted
    apart but are input too; ``thoughtsTokenCount`` is apart from ``candidatesTokenCount``.
    """
    if not isinstance(meta, dict):
        return None
    thoughts = count(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=count(meta.get("promptTokenCount")) + count(meta.get("toolUsePromptTokenCount")),
        output_tokens=count(meta.get("candidatesTokenCount")) + thoughts,
        cache_read_tokens=count(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def from_bedrock(u: Any) -> Usage | None:
    """Bedrock Converse ``usage``: ``inputTokens`` exclude cache reads and writes."""
    if not isinstance(u, dict):
        return None
    read = count(u.get("cacheReadInputTokens"))
    write = count(u.get("cacheWriteInputTokens"))
    return Usage(
        input_tokens=count(u.get("inputTokens")) + read + write,
        output_tokens=count(u.get("outputTokens")),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def from_bedrock_headers(headers: Mapping[str, str]) -> Usage | None:
    """Bedrock's ``x-amzn-bedrock-*-token-count`` response headers (InvokeModel, e.g. embeddings).

    The only token counts Bedrock gives for Cohere and Nova embeddings, whose bodies have none.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    raw_in = lower.get("x-amzn-bedrock-input-token-count")
    raw_out = lower.get("x-amzn-bedrock-output-token-count")
    if raw_in is None and raw_out is None:
        return None

    def number(raw: str | None) -> int:
        return int(raw) if raw is not None and raw.strip().isdigit() else 0

    return Usage(input_tokens=number(raw_in), output_tokens=number(raw_out))


class Observed:
    """A provider stream passed on untouched, read by a translator whose output is discarded.

    For native streams without an observer of their own (Gemini's, Bedrock's event
    stream): ``Observed(gemini.ChatStream(model, True))``. Anthropic's has a cheaper
    one (``anthropic.AnthropicStreamObserver``); OpenAI's is ``openai.ChatStream``
    with ``include_usage``.
    """

    def __init__(self, reader: ChatStreamTranslator) -> None:
        self._reader = reader

    @property
    def usage(self) -> Usage | None:
        return self._reader.usage

    @property
    def response_model(self) -> str | None:
        return self._reader.response_model

    def feed(self, chunk: bytes) -> bytes:
        self._reader.feed(chunk)
        return chunk

    def finish(self) -> bytes:
        self._reader.finish()
        return b""


# ---------------------------------------------------------------- whole bodies


Reader = Callable[[Json], tuple[Usage | None, str | None]]


def _model(body: Json, key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _openai_body(body: Json) -> tuple[Usage | None, str | None]:
    return from_openai(body.get("usage")), _model(body, "model")


def _anthropic_body(body: Json) -> tuple[Usage | None, str | None]:
    return from_anthropic(body.get("usage")), _model(body, "model")


def _gemini_body(body: Json) -> tuple[Usage | None, str | None]:
    return from_gemini(body.get("usageMetadata")), _model(body, "modelVersion")


def _bedrock_body(body: Json) -> tuple[Usage | None, str | None]:
    return from_bedrock(body.get("usage")), None  # Converse bodies name no model


def _openai_embeddings(body: Json) -> tuple[Usage | None, str | None]:
    u = body.get("usage")
    if not isinstance(u, dict):
        return None, _model(body, "model")  # some compatible servers (Gemini's) send none
    return Usage(input_tokens=count(u.get("prompt_tokens"))), _model(body, "model")


def _gemini_embeddings(body: Json) -> tuple[Usage | None, str | None]:
    # batchEmbedContents reports no tokens today; read usageMetadata should it appear.
    meta = body.get("usageMetadata")
    if not isinstance(meta, dict):
        return None, None
    return Usage(input_tokens=count(meta.get("promptTokenCount") or meta.get("totalTokenCount"))), None


def _vertex_embeddings(body: Json) -> tuple[Usage | None, str | None]:
    # Text embedding models count per instance; multimodalembedding counts nothing.
    predictions = body.get("predictions")
    counts = [
        _dict(_dict(p.get("embeddings")).get("statistics")).get("token_count")
        for p in (predictions if isinstance(predictions, list) else ())
        if isinstance(p, dict) and "embeddings" in p
    ]
    if not counts:
        return None, None
    return Usage(input_tokens=sum(count(n) for n in counts)), None


def _titan_embeddings(body: Json) -> tuple[Usage | None, str | None]:
    if "inputTextTokenCount" not in body:
        return None, None
    return Usage(input_tokens=count(body.get("inputTextTokenCount"))), None


def _cohere_embeddings(body: Json) -> tuple[Usage | None, str | None]:
    # Bedrock's Cohere body has no token count (see from_bedrock_headers); Cohere's own
    # API has meta.billed_units, read should it appear.
    billed = _dict(_dict(body.get("meta")).get("billed_units"))
    if "input_tokens" not in billed:
        return None, None
    return Usage(input_tokens=count(billed.get("input_tokens"))), None


def _nova_embeddings(body: Json) -> tuple[Usage | None, str | None]:
    return None, None  # Nova's body reports no tokens (see from_bedrock_headers)


_READERS: dict[str, Reader] = {
    "openai": _openai_body,
    "anthropic": _anthropic_body,
    "gemini": _gemini_body,
    "bedrock": _bedrock_body,
    "openai-embeddings": _openai_embeddings,
    "gemini-embeddings": _gemini_embeddings,
    "vertex-embeddings": _vertex_embeddings,
    "bedrock-titan-embeddings": _titan_embeddings,
    "bedrock-cohere-embeddings": _cohere_embeddings,
    "bedrock-nova-embeddings": _nova_embeddings,
}
FORMATS: frozenset[str] = frozenset(_READERS)


def usage_of(fmt: str, body: Any) -> tuple[Usage | None, str | None]:
    """``(usage, response model)`` of a provider's non-streamed 200 body in format ``fmt``.

    ``fmt`` is one of ``FORMATS``; either part is None when the body does not say.
    Raises ValueError only for an unknown ``fmt`` (a caller's bug, not the provider's).
    """
    reader = _READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown usage format {fmt!r}")
    return reader(body) if isinstance(body, dict) else (None, None)


def native_format(kind: str, api: str, model: str) -> str:
    """The format a provider ``kind`` answers ``api`` (``completions``, ``messages``, ``embeddings``) in.

    Vertex serves Claude in Anthropic's format and ``publisher/model`` partner models
    through its OpenAI-compatible endpoint.
    """
    if api == "embeddings":
        from .embeddings import family  # embeddings reads its token counts from here

        fam = family(kind, model)
        return fam + "-embeddings"
    if kind == "vertex":
        if model.startswith("claude"):
            return "anthropic"
        return "openai" if "/" in model else "gemini"
    return {"azure": "openai"}.get(kind, kind)
