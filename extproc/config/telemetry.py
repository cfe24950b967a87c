"""``config.metrics``, ``config.logging``, ``config.tracing`` (agentgateway's shapes) and ``config.cost``.

Field values are CEL expressions over ``jwt``, ``apiKey``, ``llm``, ``request`` (and this project's
``identity``); each is compiled when the config loads, so a typo is a load error naming the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from extproc.config.base import Duration, Strict

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The gateway's own metric labels: an added field may not take one of these names.
BUILTIN_LABELS = frozenset(
    {
        "route",
        "provider",
        "api",
        "status",
        "outcome",
        "error_type",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
    }
)
# What joins a log line to Envoy's access log and to other lines: never replaced by an added field.
PROTECTED_LOG_FIELDS = frozenset({"type", "request_id", "client_request_id", "timestamp"})


def _compile_all(fields: dict[str, str]) -> dict[str, str]:
    import cel  # the library is the authority on what compiles

    for name, expr in fields.items():
        if not isinstance(expr, str) or not expr.strip():
            raise ValueError(f"{name}: a field's value is a CEL expression (a non-empty string)")
        try:
            cel.compile(expr)
        except Exception as exc:  # the library raises ValueError/RuntimeError with the parser's text
            raise ValueError(f"{name}: {expr!r} is not a valid CEL expression ({exc})") from None
    return fields


class Fields(Strict):
    """``add``: name -> CEL expression; ``remove``: fields of the gateway's own to leave out."""

    add: dict[str, str] = {}
    remove: list[str] = []

    @field_validator("add")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        return _compile_all(v)


class MetricFields(Fields):
    @model_validator(mode="after")
    def _labels(self) -> MetricFields:
        if self.remove:
            raise ValueError("metrics.fields.remove is not supported: the gateway's labels are fixed")
        for name in self.add:
            if not _LABEL.match(name):
                raise ValueError(f"{name!r} cannot be a Prometheus label name: use letters, digits and _")
            if name in BUILTIN_LABELS:
                raise ValueError(f"{name!r} is one of the gateway's own labels")
        return self


class MetricsConfig(Strict):
    # agentgateway's names are prefixed ``agentgateway_``: the default keeps its queries working.
    prefix: str = "agentgateway"
    fields: MetricFields = MetricFields()
    # Distinct label sets per worker before new ones are folded into one overflow series.
    cardinality_limit: int = Field(2000, alias="cardinalityLimit", ge=10)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not _LABEL.match(v):
            raise ValueError(f"{v!r} cannot start a Prometheus metric name: use letters, digits and _")
        return v


class LoggingFields(Fields):
    @model_validator(mode="after")
    def _names(self) -> LoggingFields:
        for name in [*self.add, *self.remove]:
            if name in PROTECTED_LOG_FIELDS:
                raise ValueError(f"{name!r} joins log lines to each other and to Envoy's log: it stays")
        return self


class LoggingConfig(Strict):
    format: Literal["json"] = "json"
    fields: LoggingFields = LoggingFields()


class TracingConfig(Strict):
    """OTLP export of the gateway's spans, and Envoy's own to the same collector
    (extproc/telemetry/tracing.py, extproc/render/tracing.py)."""

    otlp_endpoint: str = Field(alias="otlpEndpoint")
    otlp_protocol: Literal["grpc", "http"] = Field("grpc", alias="otlpProtocol")
    # agentgateway takes a bool, a ratio, or either as a string (the seeds write 'true').
    random_sampling: bool | float | str = Field(True, alias="randomSampling")
    fields: Fields = Fields()

    @field_validator("random_sampling")
    @classmethod
    def _ratio(cls, v: bool | float | str) -> bool | float | str:
        text = str(v).strip().lower()
        if text in ("true", "false"):
            return text == "true"
        try:
            ratio = float(text)
        except ValueError:
            raise ValueError(f"{v!r}: use true, false or a ratio between 0 and 1") from None
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{v!r}: a sampling ratio is between 0 and 1")
        return ratio

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        otlp_target(v, "grpc")  # raises ValueError naming what is wrong
        return v

    @property
    def ratio(self) -> float:
        """The share of new traces sampled (a client's trace follows Envoy's decision)."""
        v = self.random_sampling
        return float(v) if not isinstance(v, str) else float(v == "true")


@dataclass(frozen=True)
class OtlpTarget:
    secure: bool
    host: str
    port: int
    path: str  # OTLP/HTTP only: where spans are POSTed


_DEFAULT_PORT = {"grpc": 4317, "http": 4318}


def otlp_target(endpoint: str, protocol: str) -> OtlpTarget:
    """``http://collector:4317``, ``https://host``, or a bare ``host:port`` (plaintext)."""
    text = endpoint.strip()
    if "://" not in text:
        text = "http://" + text
    parsed = urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{endpoint!r}: use http://host:port or https://host:port")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{endpoint!r}: the port is not a number") from None
    path = parsed.path.rstrip("/")
    if protocol == "http" and not path.endswith("/v1/traces"):
        path += "/v1/traces"  # as OTEL_EXPORTER_OTLP_ENDPOINT is read: the signal's path appended
    secure = parsed.scheme == "https"
    # No port: OTLP's own (4317 gRPC, 4318 HTTP) in plaintext, HTTPS's behind TLS.
    return OtlpTarget(secure, parsed.hostname, port or (443 if secure else _DEFAULT_PORT[protocol]), path)


def tracing_of(cfg: Any) -> TracingConfig | None:
    """``config.tracing``, else the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and
    ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` is OTLP/HTTP), else None: no tracing.

    Both Envoy's bootstrap (render) and the extproc sidecar read it, so both export or neither."""
    if cfg.tracing is not None:
        return cfg.tracing  # type: ignore[no-any-return]
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    return TracingConfig.model_validate(
        {"otlpEndpoint": endpoint, "otlpProtocol": "http" if protocol.startswith("http") else "grpc"}
    )


class CostConfig(Strict):
    """The price table: LiteLLM's model_prices_and_context_window.json shape, read as it is."""

    # Relative to the config file. Unset: prices.json beside the config, if there is one.
    prices_file: str | None = Field(None, alias="pricesFile")
    # How often the file's modification time is looked at (a changed file is read again).
    reload_interval: Duration = Field("5s", alias="reloadInterval")
