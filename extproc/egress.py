"""What one attempt sends to the provider Envoy picked: path, credentials, body.

Pure: credentials come from ``extproc.credentials``, the translators from ``extproc.translate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol
from urllib.parse import quote

import orjson

from extproc.errors import GatewayError
from extproc.gateway import Upstream
from extproc.translate import anthropic, bedrock, embeddings, gemini, messages, openai
from extproc.translate.base import Json, TranslationError

# Which translator speaks each provider kind's chat API.
_CHAT_MODULE: dict[str, ModuleType] = {
    "openai": openai,
    "azure": openai,
    "anthropic": anthropic,
    "gemini": gemini,
    "vertex": gemini,
    "bedrock": bedrock,
}


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Answer(Protocol):
    """How to read the provider's answer back into the client's API."""

    def response(self, body: Json, created: int) -> Json: ...

    def error(self, status: int, body: bytes, error_type: str | None) -> tuple[int, Json]: ...

    def stream(self, created: int) -> StreamTranslator: ...


@dataclass
class ChatAnswer:
    """The provider's chat answer as an OpenAI chat.completion (or its chunks)."""

    module: ModuleType
    model: str
    include_usage: bool

    def response(self, body: Json, created: int) -> Json:
        return self.module.chat_response(body, self.model, created=created)  # type: ignore[no-any-return]

    def error(self, status: int, body: bytes, error_type: str | None) -> tuple[int, Json]:
        if self.module is bedrock:
            return bedrock.error_response(status, body, error_type)
        return self.module.error_response(status, body)  # type: ignore[no-any-return]

    def stream(self, created: int) -> StreamTranslator:
        return self.module.ChatStream(self.model, self.include_usage, created=created)  # type: ignore[no-any-return]


@dataclass
class MessagesAnswer:
    """The provider's answer as an Anthropic Messages response (or its events)."""

    codec: messages.MessagesCodec
    model: str

    def response(self, body: Json, created: int) -> Json:
        return self.codec.response(body, self.model, created=created)

    def error(self, status: int, body: bytes, error_type: str | None) -> tuple[int, Json]:
        return self.codec.error(status, body, error_type)

    def stream(self, created: int) -> StreamTranslator:
        return self.codec.stream(self.model, created=created)


@dataclass
class EmbeddingsAnswer:
    """The provider's embeddings as OpenAI's embedding list (never streamed)."""

    kind: str
    model: str
    request: Json

    def response(self, body: Json, created: int) -> Json:
        return embeddings.response(self.kind, body, self.model, self.request)

    def error(self, status: int, body: bytes, error_type: str | None) -> tuple[int, Json]:
        return ChatAnswer(_CHAT_MODULE[self.kind], self.model, False).error(status, body, error_type)

    def stream(self, created: int) -> StreamTranslator:
        raise GatewayError(502, "the provider streamed an embeddings answer", code="bad_upstream_response")


@dataclass
class Attempt:
    """What one attempt sends to the provider, and how to read its answer."""

    path: str
    # None: the client's body goes as it is (no copy sent back to Envoy over gRPC).
    body: bytes | None
    stream: bool = False
    model: str = ""
    # None: the answer is already in the client's format and passes through.
    answer: Answer | None = None


def is_vertex_claude(up: Upstream, model: str) -> bool:
    return up.kind == "vertex" and model.startswith("claude")


def is_vertex_openapi(up: Upstream, model: str) -> bool:
    """Partner and open models on Vertex (``publisher/model``, e.g. ``meta/llama-...-maas``)
    are served by Vertex's OpenAI-compatible endpoint, not generateContent."""
    return up.kind == "vertex" and "/" in model and not model.startswith("claude")


def upstream_model(up: Upstream, requested: str | None) -> str:
    """The provider's configured model wins over the client's (agentgateway semantics)."""
    model = up.model or requested
    if not model:
        raise GatewayError(400, "you must provide a model parameter", code="missing_model", param="model")
    return model


def _vertex_base(up: Upstream) -> str:
    s = up.settings
    if not s.project_id:
        raise GatewayError(500, f"provider {up.name!r}: vertex needs projectId", code="gateway_config")
    return f"/v1/projects/{s.project_id}/locations/{s.region}"


def _openai_path(up: Upstream, model: str, endpoint: str) -> str | None:
    """OpenAI's and Azure's path for ``endpoint`` (``chat/completions``, ``embeddings``)."""
    if up.kind == "openai":
        return (up.path_prefix or "/v1").rstrip("/") + "/" + endpoint
    if up.kind == "azure":
        s = up.settings
        deployment = quote(s.deployment_name or model, safe="")
        return f"/openai/deployments/{deployment}/{endpoint}?api-version={s.api_version}"
    return None


def chat_path(up: Upstream, model: str, stream: bool) -> str:
    if up.path_override:
        return up.path_override
    openai_style = _openai_path(up, model, "chat/completions")
    if openai_style is not None:
        return openai_style
    if up.kind == "anthropic":
        return (up.path_prefix or "/v1").rstrip("/") + "/messages"
    if up.kind == "gemini":
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{quote(model, safe='')}:{verb}"
    if up.kind == "vertex":
        base = _vertex_base(up)
        if is_vertex_claude(up, model):
            verb = "streamRawPredict" if stream else "rawPredict"
            return f"{base}/publishers/anthropic/models/{quote(model, safe='')}:{verb}"
        if is_vertex_openapi(up, model):
            return f"{base}/endpoints/openapi/chat/completions"
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/publishers/google/models/{quote(model, safe='')}:{verb}"
    if up.kind == "bedrock":
        verb = "converse-stream" if stream else "converse"
        return f"/model/{quote(model, safe='')}/{verb}"
    raise GatewayError(500, f"unknown provider kind {up.kind}")


def _translated(exc: TranslationError) -> GatewayError:
    return GatewayError(400, str(exc), code="unsupported_parameter", param=exc.param)


def chat_attempt(up: Upstream, req: Json) -> Attempt:
    """An OpenAI chat.completions request, for this upstream."""
    model = upstream_model(up, req.get("model"))
    stream = bool(req.get("stream"))
    if is_vertex_claude(up, model):
        module = anthropic
    elif is_vertex_openapi(up, model):
        module = openai
    else:
        module = _CHAT_MODULE[up.kind]
    try:
        if is_vertex_claude(up, model):
            body = anthropic.vertex_chat_request(req, model)
        else:
            body = module.chat_request(req, model)
        if module is openai:
            # OpenAI-format streams carry usage only when asked: the gateway always asks (the usage
            # record needs it); the client's stream drops that chunk again if it did not ask.
            body = openai.ask_usage(body)
    except TranslationError as exc:
        raise _translated(exc) from None
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    return Attempt(
        path=chat_path(up, model, stream),
        body=_changed(req, body),
        stream=stream,
        model=model,
        answer=None if module is openai else ChatAnswer(module, model, include_usage),
    )


def messages_attempt(up: Upstream, req: Json) -> Attempt:
    """An Anthropic Messages request: native on Anthropic, translated for every other provider."""
    model = upstream_model(up, req.get("model"))
    stream = bool(req.get("stream"))
    codec = messages.codec("openai" if is_vertex_openapi(up, model) else up.kind, model)
    try:
        body = codec.request(req, model)
    except TranslationError as exc:
        raise _translated(exc) from None
    return Attempt(
        path=chat_path(up, model, stream),
        body=orjson.dumps(body),
        stream=stream,
        model=model,
        answer=None if up.kind == "anthropic" else MessagesAnswer(codec, model),
    )


def embeddings_path(up: Upstream, model: str) -> str:
    if up.path_override:
        return up.path_override
    openai_style = _openai_path(up, model, "embeddings")
    if openai_style is not None:
        return openai_style
    if up.kind == "vertex":
        return f"{_vertex_base(up)}/publishers/google/models/{quote(model, safe='')}:predict"
    path = embeddings.upstream_path(up.kind, model)
    if path is None:
        raise GatewayError(400, f"provider {up.kind!r} offers no embeddings", code="unsupported_api")
    return path


def embeddings_attempt(up: Upstream, req: Json) -> Attempt:
    """An OpenAI embeddings request, for this upstream."""
    model = upstream_model(up, req.get("model"))
    try:
        family = embeddings.family(up.kind, model)
        body = embeddings.request(up.kind, req, model)
    except TranslationError as exc:
        raise _translated(exc) from None
    return Attempt(
        path=embeddings_path(up, model),
        body=_changed(req, body),
        model=model,
        answer=None if family == "openai" else EmbeddingsAnswer(up.kind, model, req),
    )


def passthrough_attempt(up: Upstream, client_path: str) -> Attempt:
    return Attempt(path=up.path_override or client_path, body=None)


def _changed(req: Json, body: Json) -> bytes | None:
    """The body to send, or None when it is the client's own (OpenAI passthrough, same model)."""
    return None if body == req else orjson.dumps(body)


def now() -> int:
    return int(time.time())
