"""What the gateway's spans say: OTel GenAI attributes (reference: protocols.md 6.1) from the
exchange, the same record the log line and the metrics are made of.

- ``chat {model}`` (``embeddings {model}``; ``{METHOD} {route}`` for passthrough and model
  listings): the exchange as the client saw it, with usage, finish reasons and cost;
- ``attempt {n} {provider}``: one call to one provider, with its status.

Nothing a client or provider wrote goes out unmasked where it could hold a credential (the path,
errors: extproc/telemetry/redact.py); headers are never attributes. Prompts only through a
configured field (``llm.prompt``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from extproc.gateway import GENAI_PROVIDER_NAME
from extproc.telemetry import redact

if TYPE_CHECKING:
    from extproc.gateway import Upstream
    from extproc.pipeline.exchange import Exchange
    from extproc.telemetry.prices import Cost

OPERATION = {"completions": "chat", "messages": "chat", "embeddings": "embeddings"}
# Request parameters as the client sent them -> gen_ai.request.* (max_completion_tokens is
# OpenAI's newer max_tokens).
_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}
_STOP = ("stop", "stop_sequences")


def request_model(ex: Exchange) -> str | None:
    """The model asked of the provider (its configured one, else the client's), as the metrics say."""
    up = ex.upstream
    return (up.model if up is not None else None) or ex.request_model


def chat_name(ex: Exchange) -> str:
    op = OPERATION.get(ex.api)
    if op is None:
        return f"{ex.method} {ex.route.name}"
    model = request_model(ex)
    return f"{op} {model}" if model else op


def _params(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in _PARAMS.items():
        if key in body:
            value = body[key]
            t = type(value)  # JSON numbers are exactly int or float; a bool is neither
            if t is int or t is float:
                out[name] = value
    for key in _STOP:
        stop = body.get(key)
        if stop is None:
            continue
        if isinstance(stop, str):
            out["gen_ai.request.stop_sequences"] = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            out["gen_ai.request.stop_sequences"] = stop
    return out


def chat_attributes(ex: Exchange, cost: Cost | None) -> dict[str, Any]:
    """Every span is encoded and sent per request: what is zero, default or repeated is left out
    (cache and reasoning tokens when 0, the client's model when it is the one asked)."""
    up = ex.upstream
    trace = ex.trace
    asked = request_model(ex)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION.get(ex.api),
        "gen_ai.provider.name": GENAI_PROVIDER_NAME.get(up.kind) if up is not None else None,
        "gen_ai.request.model": asked,
        "gen_ai.response.model": ex.response_model,
        "http.request.method": ex.method,
        "url.path": redact.mask(ex.path),
        "http.response.status_code": ex.status or None,
        "gateway.request_id": ex.request_id,
        "gateway.route": ex.route.name,
        "gateway.provider": up.name if up is not None else None,
    }
    if ex.request_model and ex.request_model != asked:
        attrs["gateway.client_request_model"] = ex.request_model
    if len(ex.attempts) > 1:
        attrs["gateway.attempt.count"] = len(ex.attempts)
    if ex.llm is not None:
        if ex.stream:
            attrs["gen_ai.request.stream"] = True
        attrs |= _params(ex.llm.body)
    usage = ex.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        for name, n in (
            ("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens),
            ("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens),
            ("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens),
        ):
            if n:
                attrs[name] = n
    if trace is not None and trace.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = list(trace.finish_reasons)
    if trace is not None and trace.response_id:
        attrs["gen_ai.response.id"] = redact.mask(trace.response_id)
    if ex.stream and ex.first_token is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = round(ex.first_token - ex.started, 6)
    if cost is not None:
        if cost.usd is not None:
            attrs["gateway.cost.usd"] = cost.usd
        if cost.status != "priced":
            attrs["gateway.cost.status"] = cost.status
    if ex.outcome != "ok":
        attrs["gateway.outcome"] = ex.outcome
        attrs["error.type"] = ex.outcome if ex.status < 400 else str(ex.status)
    return attrs


def chat_error(ex: Exchange) -> str | None:
    if ex.outcome == "ok":
        return None
    return redact.mask(ex.error or f"{ex.outcome} ({ex.status})")


def attempt_name(number: int, up: Upstream) -> str:
    return f"attempt {number} {up.name}"


def attempt_attributes(
    up: Upstream, api: str, number: int, status: int | None, method: str = "POST", path: str | None = None
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION.get(api),
        "gen_ai.provider.name": GENAI_PROVIDER_NAME.get(up.kind),
        "gen_ai.request.model": up.model,
        "gateway.provider": up.name,
        "gateway.attempt.number": number,
        "server.address": up.host,
        "server.port": up.port,
        "http.request.method": method,
        "url.path": redact.mask(path) if path else None,
        "http.response.status_code": status or None,
    }
    if status is None or status >= 400:
        attrs["error.type"] = str(status) if status else "no_response"
    return attrs


def field_attributes(values: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``config.tracing.fields.add`` results as attributes (masked already, by FieldSet), and the
    span name when one is ``span.name`` (agentgateway's way to rename the span)."""
    name = values.pop("span.name", None)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        flat = isinstance(value, bool | int | float | str)
        if flat or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            out[key] = value
        else:  # maps, lists of maps (llm.prompt): one JSON string, as OTel attributes are flat
            out[key] = orjson.dumps(value, default=str).decode()
    return out, (str(name) if name else None)
