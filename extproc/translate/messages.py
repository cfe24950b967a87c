"""The Anthropic Messages API as a *client* format, served from any provider.

``codec(kind, model)`` gives the translator for one provider kind:

- ``anthropic``: native; the request gets the model, the answer passes through.
- ``vertex`` with a ``claude*`` model: native body for rawPredict (no ``model``,
  ``anthropic_version`` instead, only the fields Vertex knows).
- ``openai`` / ``azure``: chat.completions (``messages_openai``).
- ``gemini`` / ``vertex`` otherwise: composed, Messages -> chat request ->
  ``gemini.chat_request``, and back through ``gemini.chat_response`` /
  ``gemini.ChatStream``; thinking budget and tool-error flags are set on the
  Gemini body directly since the chat shape has no room for them.
- ``bedrock``: Converse, translated directly (``messages_bedrock``).

Each codec is pure and stateless; ``stream()`` returns a fresh translator whose
``feed(bytes)`` / ``finish()`` turn the provider's stream, split anywhere, into
Anthropic SSE events that always end in ``message_stop`` or one ``error`` event.
Streams also expose ``response_model`` and ``usage`` (a ``Usage``), read from the
provider's own events as they come; each is None until the provider says.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from . import anthropic, gemini
from . import common as c
from . import messages_bedrock as mb
from . import messages_common as m
from . import messages_openai as mo
from .base import Json, TranslationError
from .fields import MESSAGES_IGNORED, NO_NOOP, FieldTable
from .messages_request import field_object, thinking_kind
from .sse import SSEEvent, SSETranslator
from .usage import Usage, from_anthropic, set_counters


class MessagesStream(Protocol):
    @property
    def response_model(self) -> str | None: ...

    @property
    def usage(self) -> Usage | None: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class MessagesCodec(Protocol):
    # True when the provider's 200 bodies and streams already are Anthropic Messages
    # (response() is the identity); its errors still go through error().
    native: bool

    def request(self, req: Json, model: str) -> Json: ...

    def response(self, resp: Json, model: str, *, created: int = 0) -> Json: ...

    def error(self, status: int, body: bytes, error_type: str | None = None) -> tuple[int, Json]: ...

    def stream(self, model: str, *, created: int = 0) -> MessagesStream: ...


def codec(kind: str, model: str) -> MessagesCodec:
    """The Messages translator for a provider kind (``model`` picks Claude or Gemini on Vertex)."""
    if kind == "anthropic":
        return _ANTHROPIC
    if kind in ("openai", "azure"):
        return _OPENAI
    if kind == "gemini":
        return _GEMINI
    if kind == "vertex":
        return _VERTEX_CLAUDE if model.startswith("claude") else _GEMINI
    if kind == "bedrock":
        return _BEDROCK
    raise ValueError(f"unknown provider kind {kind!r}")


# ---------------------------------------------------------------- Anthropic (native) and Vertex Claude


# The Messages fields Vertex's rawPredict accepts; it rejects others (and lags behind Anthropic's API).
_VERTEX_FIELDS = frozenset(
    {
        "messages", "system", "max_tokens", "metadata", "stop_sequences", "stream", "temperature",
        "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config", "context_management",
    }
)  # fmt: skip
_VERTEX_CACHE_CONTROL = ("type", "ttl")


class AnthropicCodec:
    native = True

    def request(self, req: Json, model: str) -> Json:
        body = dict(req)
        body["model"] = model
        _strip_unsigned_thinking(body)
        return body

    def response(self, resp: Json, model: str, *, created: int = 0) -> Json:
        return resp

    def error(self, status: int, body: bytes, error_type: str | None = None) -> tuple[int, Json]:
        return m.error_response(status, body, error_type)

    def stream(self, model: str, *, created: int = 0) -> MessagesStream:
        return NativeEvents(model)


class VertexClaudeCodec(AnthropicCodec):
    def request(self, req: Json, model: str) -> Json:
        """Claude on Vertex: the model is in the URL and the API version in the body."""
        body = {k: v for k, v in req.items() if k in _VERTEX_FIELDS}
        legacy = req.get("output_format")
        config = field_object(req, "output_config")
        if isinstance(legacy, dict) and "format" not in config:
            body["output_config"] = {**config, "format": legacy}  # the older top-level spelling
        for key in ("messages", "system", "tools"):
            if key in body:
                body[key] = _vertex_cache_control(body[key])
        body["anthropic_version"] = anthropic.VERTEX_ANTHROPIC_VERSION
        _strip_unsigned_thinking(body)
        return body


def _unsigned(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature")


def _strip_unsigned_thinking(body: Json) -> None:
    """Drops thinking blocks without a signature (copy-on-write).

    They come from our own translations of other providers' reasoning; Anthropic
    rejects them on replay, and an empty assistant turn too, so such a turn goes.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    out: list[Any] | None = None
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) and msg.get("role") == "assistant" else None
        if not isinstance(content, list) or not any(_unsigned(b) for b in content):
            continue
        if out is None:
            out = list(messages)
        kept = [b for b in content if not _unsigned(b)]
        out[i] = {**msg, "content": kept} if kept else None
    if out is not None:
        body["messages"] = [msg for msg in out if msg is not None]


def _vertex_cache_control(value: Any) -> Any:
    """``cache_control`` with only the keys Vertex knows (copy-on-write, nested tool results too)."""
    if isinstance(value, list):
        items = [_vertex_cache_control(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if not isinstance(value, dict):
        return value
    changed: Json = {}
    cc = value.get("cache_control")
    if isinstance(cc, dict) and set(cc) - set(_VERTEX_CACHE_CONTROL):
        changed["cache_control"] = {k: v for k, v in cc.items() if k in _VERTEX_CACHE_CONTROL}
    content = value.get("content")
    if isinstance(content, list):
        cleaned = _vertex_cache_control(content)
        if cleaned is not content:
            changed["content"] = cleaned
    return {**value, **changed} if changed else value


class NativeEvents(SSETranslator):
    """An Anthropic SSE stream passed on whole event by whole event.

    Only complete events go out, so a stream cut mid-event never reaches the client
    half-written; a stream that ends without ``message_stop`` or ``error``, or sends
    an event that is not JSON, ends with an ``error`` event instead.
    """

    def __init__(self, model: str) -> None:
        super().__init__()
        self.response_model: str | None = None
        self._usage: Json = {}
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return from_anthropic(self._usage) if self._usage else None

    @property
    def closed(self) -> bool:
        return self._done

    def _last_events(self, events: list[SSEEvent]) -> bytes:
        # A half-written last event is a cut stream, not a malformed one.
        return self._events(events, m.TRUNCATED)

    def _ended(self) -> bytes:
        self._done = True
        return m.error_event("api_error", m.TRUNCATED)

    def _events(self, events: list[SSEEvent], bad_event: str = m.MALFORMED) -> bytes:
        out = bytearray()
        for event in events:
            if self._done:
                break
            try:
                data = orjson.loads(event.data)
                kind = data["type"]
                self._inspect(kind, data)
            except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError):
                self._done = True
                out += m.error_event("api_error", bad_event)
                break
            name = event.event or kind
            out += b"event: " + name.encode() + b"\ndata: " + event.data.replace(b"\n", b"\ndata: ") + b"\n\n"
            self._done = kind in ("message_stop", "error")
        return bytes(out)

    def _inspect(self, kind: str, data: Json) -> None:
        if not isinstance(kind, str):
            raise TypeError("event type must be a string")
        if kind == "message_start":
            message = data["message"]
            if isinstance(message.get("model"), str) and message["model"]:
                self.response_model = message["model"]
            set_counters(self._usage, message.get("usage"))
        elif kind == "message_delta":
            set_counters(self._usage, data.get("usage"))


# ---------------------------------------------------------------- OpenAI and Azure


class OpenAICodec:
    native = False

    def request(self, req: Json, model: str) -> Json:
        return mo.chat_request(req, model)

    def response(self, resp: Json, model: str, *, created: int = 0) -> Json:
        return mo.message_response(resp, model)

    def error(self, status: int, body: bytes, error_type: str | None = None) -> tuple[int, Json]:
        return m.error_response(status, body, error_type)

    def stream(self, model: str, *, created: int = 0) -> MessagesStream:
        return mo.ChunkEvents(model)


# ---------------------------------------------------------------- Gemini and Vertex Gemini


# The Messages fields carried to generateContent (through the chat shape), dropped (see
# MESSAGES_IGNORED for why), or refused (see fields.py).
GEMINI_FIELDS = FieldTable(
    provider="Gemini",
    mapped=frozenset(
        {
            "model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
            "top_p", "top_k", "tools", "output_format",
            "tool_choice",  # but not disable_parallel_tool_use (_gemini_parallel_tools)
            "thinking", "output_config",  # -> thinkingConfig, responseSchema
        }
    ),
    ignored={
        **MESSAGES_IGNORED,
        "metadata": "only user_id, and Gemini has no end-user field; the id tracks abuse, not the answer",
    },
    unsupported={
        "container": NO_NOOP,  # code execution and skills run at Anthropic only
        "mcp_servers": NO_NOOP,  # Anthropic's MCP connector calls the servers itself
        "inference_geo": NO_NOOP,  # data residency: a promise the gateway cannot keep elsewhere
    },
)  # fmt: skip


class GeminiCodec:
    native = False

    def request(self, req: Json, model: str) -> Json:
        _gemini_parallel_tools(req)
        chat = mo.chat_request(req, model, keep_top_k=True, fields=GEMINI_FIELDS)
        chat.pop("reasoning_effort", None)  # the thinking budget is set below, unrounded
        body = gemini.chat_request(chat, model)
        _gemini_thinking(req, body)
        _gemini_tool_errors(req, body)
        return body

    def response(self, resp: Json, model: str, *, created: int = 0) -> Json:
        return mo.message_response(gemini.chat_response(resp, model, created=created), model)

    def error(self, status: int, body: bytes, error_type: str | None = None) -> tuple[int, Json]:
        return m.error_response(status, body, error_type)

    def stream(self, model: str, *, created: int = 0) -> MessagesStream:
        return GeminiEvents(model, created)


def _gemini_parallel_tools(req: Json) -> None:
    """Gemini cannot be told to call one tool at a time: refuse rather than drop the wish."""
    choice = req.get("tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") and req.get("tools"):
        raise TranslationError(
            "tool_choice.disable_parallel_tool_use is not supported by Gemini", "tool_choice"
        )


def _gemini_thinking(req: Json, body: Json) -> None:
    kind = thinking_kind(req)
    if kind is None:
        return  # Gemini's own default; Anthropic's default (no thinking) cannot be forced on all models
    budget = req["thinking"].get("budget_tokens")
    effort = field_object(req, "output_config").get("effort")
    if kind != "enabled" or not isinstance(budget, int):
        # Adaptive: the effort's budget, or -1 (Gemini decides) without one.
        budget = c.REASONING_BUDGETS.get("xhigh" if effort == "max" else str(effort), -1)
    body.setdefault("generationConfig", {})["thinkingConfig"] = {
        "thinkingBudget": budget,
        "includeThoughts": True,
    }


def _gemini_tool_errors(req: Json, body: Json) -> None:
    """A tool_result with ``is_error`` answers under ``error``, the key Gemini reads as a failure.

    The chat step makes one functionResponse per tool_result, in order.
    """
    flags = [
        bool(block.get("is_error"))
        for msg in req.get("messages") or ()
        if isinstance(msg.get("content"), list)
        for block in msg["content"]
        if block.get("type") == "tool_result"
    ]
    if not any(flags):
        return
    responses = [
        part["functionResponse"]
        for turn in body.get("contents") or ()
        for part in turn.get("parts") or ()
        if "functionResponse" in part
    ]
    for flag, response in zip(flags, responses, strict=False):
        if flag:
            response["response"] = {"error": response["response"].get("content")}


class GeminiEvents:
    """Gemini's stream through ``gemini.ChatStream`` (OpenAI chunks), then ``ChunkEvents``."""

    def __init__(self, model: str, created: int = 0) -> None:
        self._gemini = gemini.ChatStream(model, include_usage=True, created=created)
        self._events = mo.ChunkEvents(model)

    @property
    def response_model(self) -> str | None:
        return self._gemini.response_model

    @property
    def usage(self) -> Usage | None:
        return self._gemini.usage

    def feed(self, chunk: bytes) -> bytes:
        return self._events.feed(self._gemini.feed(chunk))

    def finish(self) -> bytes:
        # Gemini sends no end marker: its usage and [DONE] come from finish().
        return self._events.feed(self._gemini.finish()) + self._events.finish()


# ---------------------------------------------------------------- Bedrock


class BedrockCodec:
    native = False

    def request(self, req: Json, model: str) -> Json:
        return mb.converse_request(req, model)

    def response(self, resp: Json, model: str, *, created: int = 0) -> Json:
        return mb.message_response(resp, model)

    def error(self, status: int, body: bytes, error_type: str | None = None) -> tuple[int, Json]:
        return m.error_response(status, body, error_type)

    def stream(self, model: str, *, created: int = 0) -> MessagesStream:
        return mb.ConverseEvents(model)


_ANTHROPIC = AnthropicCodec()
_VERTEX_CLAUDE = VertexClaudeCodec()
_OPENAI = OpenAICodec()
_GEMINI = GeminiCodec()
_BEDROCK = BedrockCodec()
