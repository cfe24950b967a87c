"""Token estimates before the call, for limits that reserve tokens up front.

``estimate_prompt_tokens(api, body, model)`` counts what the request sends;
``estimate_request_tokens`` adds what it may generate. ``api`` is the client API:
``completions`` (OpenAI chat), ``messages`` (Anthropic) or ``embeddings``. Neither
ever raises: odd shapes count what can be read and skip the rest.

How text is counted:

- OpenAI models (gpt-*, o-series, chatgpt-*, text-embedding-*): exactly, with the
  model's own encoding (``o200k_base`` or ``cl100k_base``) from ``toktok-rs``, whose
  wheel compiles both encodings in (tiktoken downloads them at run time, which fails
  offline). Its ids are tiktoken's; about 35 µs per 1,000 tokens on this machine.
- Every other model (Claude, Gemini, Bedrock's, ...): ``o200k_base`` as a proxy. Their
  tokenizers are not available offline; a modern 200k vocabulary is a closer guess than
  characters/4 for code and non-Latin scripts, but the provider's count will differ.
- Without the tokenizer (a platform without a wheel): UTF-8 bytes / 4, rounded up.

Around the text, as OpenAI's chat format counts it: 3 tokens per message, 1 for a
``name``, 3 to prime the reply. Tool definitions and JSON schemas count as their
compact JSON. Media cannot be counted without decoding it, so each part is a fixed
estimate (``IMAGE_TOKENS``, ``DOCUMENT_TOKENS``, ``AUDIO_TOKENS``).

The tokenizer loads its encodings on first use (about 0.3 s each): call ``warm_up()``
at start-up so no request pays for it.
"""

from __future__ import annotations

from typing import Any

import orjson

try:  # the wheel is the only offline source of the encodings; without it, approximate
    import toktok
except ImportError:  # pragma: no cover - every supported platform has a wheel
    toktok = None  # type: ignore[assignment]

# Output the request may generate when it sets no limit: the translators' own default
# for providers that need one (Anthropic, Bedrock); OpenAI's true cap is the model's.
DEFAULT_MAX_OUTPUT_TOKENS = 4096

MESSAGE_TOKENS = 3  # <|start|>role ... <|end|> around every message
NAME_TOKENS = 1
REPLY_TOKENS = 3  # <|start|>assistant<|message|> priming the answer
# A 1024x1024 image: OpenAI counts 765 at high detail, Anthropic (w*h)/750 = 1398,
# Gemini 258 per tile; the middle of those, for an image of unknown size.
IMAGE_TOKENS = 1024
# A PDF of unknown length: Anthropic counts 1,500-3,000 tokens a page; two pages' worth.
DOCUMENT_TOKENS = 3000
AUDIO_TOKENS = 1000  # about a minute of speech at OpenAI's rates
_MAX_DEPTH = 16  # tool results nest content; deeper than this is not a real request

_O200K = "o200k_base"
_CL100K = "cl100k_base"
# Model name prefixes (after any "provider/" prefix) and their encodings; first match wins.
_OPENAI_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", _O200K),
    ("gpt-4.1", _O200K),
    ("gpt-4.5", _O200K),
    ("gpt-5", _O200K),
    ("gpt-oss", _O200K),
    ("chatgpt-", _O200K),
    ("o1", _O200K),
    ("o3", _O200K),
    ("o4", _O200K),
    ("codex-", _O200K),
    ("gpt-4", _CL100K),
    ("gpt-3.5", _CL100K),
    ("gpt-35", _CL100K),  # Azure's deployment spelling
    ("text-embedding-", _CL100K),
)


def encoding_for(model: Any) -> str | None:
    """The tiktoken encoding of an OpenAI model; None for other models."""
    if not isinstance(model, str):
        return None
    name = model.rsplit("/", 1)[-1].lower()
    for prefix, encoding in _OPENAI_ENCODINGS:
        if name.startswith(prefix):
            return encoding
    return None


def warm_up() -> None:
    """Loads both encodings now, so the first request does not wait for them."""
    _count([" "], _O200K)
    _count([" "], _CL100K)


# ---------------------------------------------------------------- public estimates


def estimate_prompt_tokens(api: str, body: Any, model: str) -> int:
    """Tokens the request sends, estimated as the module docstring says; never raises."""
    try:
        return _prompt_tokens(api, body, model)
    except Exception:  # a shape the walkers did not foresee must not fail the request
        return _bytes_estimate(_dumps(body))


def estimate_request_tokens(api: str, body: Any, model: str) -> int:
    """The prompt estimate plus the most the request may generate; never raises."""
    prompt = estimate_prompt_tokens(api, body, model)
    limit, choices = output_limit(api, body)
    return prompt + (DEFAULT_MAX_OUTPUT_TOKENS if limit is None else limit) * choices


def output_limit(api: str, body: Any) -> tuple[int | None, int]:
    """(the output tokens per choice the request allows, None when it sets no limit; choices).
    Requests that generate nothing (embeddings) allow 0."""
    if api == "embeddings" or not isinstance(body, dict):
        return 0, 1
    if api == "completions":
        limit = _positive(body.get("max_completion_tokens")) or _positive(body.get("max_tokens"))
        return limit, _positive(body.get("n")) or 1  # each choice is generated in full
    return _positive(body.get("max_tokens")), 1


# ---------------------------------------------------------------- walking the request


class _Tally:
    """Texts to count in one tokenizer call, plus fixed counts (overheads, media)."""

    __slots__ = ("fixed", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fixed = 0

    def text(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.texts.append(value)

    def json(self, value: Any) -> None:
        if value is not None:
            self.texts.append(_dumps(value))


def _prompt_tokens(api: str, body: Any, model: str) -> int:
    if not isinstance(body, dict):
        return 0
    tally = _Tally()
    if api == "completions":
        _chat(body, tally)
    elif api == "messages":
        _messages(body, tally)
    elif api == "embeddings":
        return _embeddings(body.get("input"), model)
    else:
        tally.json(body)  # an API without a walker: its JSON as text
    encoding = encoding_for(model) or _O200K
    return tally.fixed + sum(_count(tally.texts, encoding))


def _chat(body: dict[str, Any], tally: _Tally) -> None:
    for msg in _list(body.get("messages")):
        if not isinstance(msg, dict):
            continue
        tally.fixed += MESSAGE_TOKENS
        tally.text(msg.get("role"))
        if msg.get("name"):
            tally.fixed += NAME_TOKENS
            tally.text(msg.get("name"))
        _chat_content(msg.get("content"), tally)
        tally.text(msg.get("reasoning_content"))
        for call in _list(msg.get("tool_calls")):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                tally.text(fn.get("name"))
                args = fn.get("arguments")
                if isinstance(args, str):
                    tally.text(args)
                else:
                    tally.json(args)
        tally.text(msg.get("tool_call_id"))
    tally.fixed += REPLY_TOKENS
    for tool in _list(body.get("tools")):
        tally.json(tool.get("function", tool) if isinstance(tool, dict) else tool)
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        tally.json(fmt.get("json_schema"))


def _chat_content(content: Any, tally: _Tally) -> None:
    if isinstance(content, str):
        tally.text(content)
        return
    for part in _list(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "image_url":
            tally.fixed += IMAGE_TOKENS
        elif kind == "file":
            tally.fixed += DOCUMENT_TOKENS
        elif kind == "input_audio":
            tally.fixed += AUDIO_TOKENS
        else:
            tally.text(part.get("text"))
            tally.text(part.get("refusal"))


def _messages(body: dict[str, Any], tally: _Tally) -> None:
    _blocks(body.get("system"), tally, 0)
    for msg in _list(body.get("messages")):
        if isinstance(msg, dict):
            tally.fixed += MESSAGE_TOKENS
            _blocks(msg.get("content"), tally, 0)
    tally.fixed += REPLY_TOKENS
    for tool in _list(body.get("tools")):
        tally.json(tool)
    fmt = body.get("output_config")
    if isinstance(fmt, dict):
        tally.json(fmt.get("format"))


def _blocks(content: Any, tally: _Tally, depth: int) -> None:
    """Anthropic content: a string or blocks, tool results nesting more blocks."""
    if isinstance(content, str):
        tally.text(content)
        return
    if depth > _MAX_DEPTH:
        return
    for block in _list(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "image":
            tally.fixed += IMAGE_TOKENS
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                tally.text(source.get("data"))
            elif isinstance(source, dict) and source.get("type") == "content":
                _blocks(source.get("content"), tally, depth + 1)
            else:
                tally.fixed += DOCUMENT_TOKENS
        elif kind == "tool_use":
            tally.text(block.get("name"))
            tally.json(block.get("input"))
        elif kind == "tool_result":
            _blocks(block.get("content"), tally, depth + 1)
        else:  # text, thinking, redacted_thinking, search results and blocks yet to come
            for key in ("text", "thinking", "data", "title"):
                tally.text(block.get(key))
            if "content" in block:
                _blocks(block.get("content"), tally, depth + 1)


def _embeddings(value: Any, model: str) -> int:
    """Strings are counted; token arrays are already tokens."""
    if isinstance(value, str):
        return sum(_count([value], encoding_for(model) or _O200K))
    if not isinstance(value, list):
        return 0
    if all(isinstance(v, int) for v in value):
        return len(value)  # one pre-tokenised input
    texts = [v for v in value if isinstance(v, str)]
    arrays = sum(len(v) for v in value if isinstance(v, list))
    return arrays + sum(_count(texts, encoding_for(model) or _O200K))


# ---------------------------------------------------------------- counting


# Counts already made, by (encoding, hash of the text): a conversation sends its whole history
# again every turn, and most requests share a system prompt, so most texts were counted before.
# Keyed by hash, not text, so no prompt is kept alive; at 64 bits two texts that share a hash
# are not a concern for an estimate. Cleared, not grown, past _COUNTS_KEPT.
_COUNTS: dict[tuple[str, int], int] = {}
_COUNTS_KEPT = 16_384


def _count(texts: list[str], encoding: str) -> list[int]:
    if toktok is None:
        return [_bytes_estimate(t) for t in texts]
    # The tokenizer's own count, text by text: batch_count hands every call to a thread pool,
    # about 20 µs even for one short text, where count takes half a microsecond (warm). Same
    # counts (tests/unit/test_tokens.py); toktok loads the tokenizer once and caches it.
    count = toktok._encoding(encoding).count
    out = []
    for text in texts:
        key = (encoding, hash(text))
        n = _COUNTS.get(key)
        if n is None:
            try:
                n = count(text)
            except Exception:  # a string the tokenizer rejects (lone surrogates) is still text
                n = _bytes_estimate(text)
            if len(_COUNTS) >= _COUNTS_KEPT:
                _COUNTS.clear()
            _COUNTS[key] = n
        out.append(n)
    return out


def _bytes_estimate(text: str) -> int:
    return (len(text.encode("utf-8", "replace")) + 3) // 4


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except Exception:  # too deep, or keys that are not strings
        try:
            return str(value)
        except Exception:  # deeper than the interpreter's recursion limit
            return ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
