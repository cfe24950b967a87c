"""The extproc process's telemetry: metrics, prices, CEL fields, spans, built once from the config.

``start`` (the sidecar's startup) builds it, loads and watches the price table, serves
``/metrics`` and starts the span exporter (``config.tracing``); ``current`` is what the
usage-record stage uses (an empty default when nothing was started: unit tests, embedded use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel

from extproc.config.base import parse_duration
from extproc.config.model import GlobalConfig
from extproc.config.telemetry import tracing_of
from extproc.gateway import Gateway, resolve_secret
from extproc.pipeline.exchange import Exchange
from extproc.telemetry import redact, spans, tracing
from extproc.telemetry.fields import FieldSet, context, label_value, merge, variables_of
from extproc.telemetry.metrics import GatewayMetrics
from extproc.telemetry.prices import Cost, PriceTable, PriceWatcher

log = logging.getLogger("gateway.telemetry")

# Fields of the record that carry client- or provider-written text.
_FREE_TEXT = ("path", "error", "client_request_id")


@dataclass
class Telemetry:
    metrics: GatewayMetrics
    prices: PriceTable
    log_fields: FieldSet
    metric_fields: FieldSet
    removed: frozenset[str] = frozenset()
    watcher: PriceWatcher | None = None
    trace_fields: FieldSet = field(default_factory=FieldSet)
    tracer: tracing.Tracer | None = None  # None: config.tracing unset, no spans

    def __post_init__(self) -> None:
        self.needs = merge(merge(self.log_fields.needs, self.metric_fields.needs), self.trace_fields.needs)
        self._untraced = [fs for fs in (self.log_fields, self.metric_fields) if fs]
        self._sets = [*self._untraced, self.trace_fields] if self.trace_fields else self._untraced

    @classmethod
    def build(cls, cfg: GlobalConfig) -> Telemetry:
        metric_fields = FieldSet(cfg.metrics.fields.add)
        traced = tracing_of(cfg)
        return cls(
            metrics=GatewayMetrics(
                cfg.metrics.prefix, tuple(cfg.metrics.fields.add), cfg.metrics.cardinality_limit
            ),
            prices=PriceTable(),
            log_fields=FieldSet(cfg.logging.fields.add),
            metric_fields=metric_fields,
            removed=frozenset(cfg.logging.fields.remove),
            trace_fields=FieldSet(traced.fields.add if traced is not None else {}),
        )

    def cost_of(self, ex: Exchange) -> Cost:
        up = ex.upstream
        asked = (up.model if up is not None else None) or ex.request_model
        return self.prices.cost(ex.usage, [ex.response_model, asked], up.kind if up is not None else None)

    def context_of(self, ex: Exchange, cost: Cost | None) -> cel.Context | None:
        """One CEL context for every field set, with only the variables they name."""
        # The span's fields only for a span that will be recorded (tracing samples).
        sets = self._sets if ex.trace is not None and ex.trace.sampled else self._untraced
        if not sets:
            return None
        names = frozenset().union(*(fs.variables for fs in sets))
        prompt = any(fs.wants_prompt for fs in sets)
        return context(variables_of(ex, cost, names, prompt), self.needs)

    def log_line(self, record: dict[str, Any], ctx: cel.Context | None) -> dict[str, Any]:
        for name in _FREE_TEXT:
            value = record.get(name)
            if isinstance(value, str):
                record[name] = redact.mask(value)
        for name in self.removed:
            record.pop(name, None)
        if self.log_fields:
            record.update(self.log_fields.evaluate(ctx))
        return record

    def trace(self, ex: Exchange, cost: Cost | None, ctx: cel.Context | None) -> None:
        """The exchange's chat span and, when the router phase saw it, its answering attempt's
        (the upstream phase records the attempts that failed: extproc/telemetry/attempt_span.py)."""
        tr, tracer = ex.trace, self.tracer
        if tracer is None or tr is None or not tr.sampled:
            return
        values = self.trace_fields.evaluate(ctx) if self.trace_fields else {}
        extra, name = spans.field_attributes(values)
        start = int(ex.started_wall * 1e9)
        end = tracing.wall_ns(ex.started_wall, ex.started, ex.ended)
        attrs = spans.chat_attributes(ex, cost) | extra
        error = spans.chat_error(ex)
        tracer.emit(
            name or spans.chat_name(ex),
            tr.trace_id,
            tr.span_id,
            tr.parent_id,
            attrs,
            start,
            end,
            error,
            tr.tracestate,
        )
        answered = tracing.answering_attempt(ex, tr)
        up = ex.upstream
        if answered is not None and up is not None:
            span_id, started_ns, number = answered
            attempt = spans.attempt_attributes(up, ex.api, number, ex.status, tr.method, tr.path)
            failed = error if ex.status >= 400 or ex.outcome != "ok" else None
            tracer.emit(
                spans.attempt_name(number, up),
                tr.trace_id,
                span_id,
                tr.span_id,
                attempt,
                started_ns,
                end,
                failed,
            )

    def label_values(self, ctx: cel.Context | None) -> tuple[str, ...]:
        if not self.metric_fields:
            return ()
        return tuple(label_value(v) for v in self.metric_fields.evaluate(ctx).values())


def known_secrets(gw: Gateway) -> list[str | None]:
    """Provider keys (as the sidecar resolves them) and the inline gateway API keys."""
    secrets = [up.secret()[0] for up in gw.upstreams_by_id.values()]
    for route in gw.routes:
        api_key = route.policies.api_key
        if api_key is not None:
            secrets += [resolve_secret(k.key)[0] for k in api_key.keys if k.key]
    return secrets


def prices_path(gw: Gateway, config_dir: Path) -> tuple[Path | None, bool]:
    """(the price table, whether the config names it); None when unset and none is beside it."""
    name = gw.config.config.cost.prices_file
    if name is not None:
        return (config_dir / name).resolve(), True
    beside = config_dir / "prices.json"
    return (beside, False) if beside.exists() else (None, False)


_current: Telemetry | None = None


def current() -> Telemetry:
    global _current
    if _current is None:
        _current = Telemetry.build(GlobalConfig())
    return _current


def install(telemetry: Telemetry) -> None:
    global _current
    _current = telemetry


class PricesError(Exception):
    """The configured price table cannot be read at startup."""


def start(gw: Gateway, config_dir: Path) -> Telemetry:
    """Build the process's telemetry and load the price table (PricesError if the configured one
    is unreadable); the table is then watched from a background thread."""
    telemetry = Telemetry.build(gw.config.config)
    redact.set_known_secrets(known_secrets(gw))
    path, explicit = prices_path(gw, config_dir)
    if path is None:
        log.warning(
            "no price table (config.cost.pricesFile unset and no prices.json beside the config): "
            "every request's cost is reported as unpriced"
        )
    else:
        watcher = PriceWatcher(path, telemetry.prices, parse_duration(gw.config.config.cost.reload_interval))
        try:
            watcher.load_now()
        except (OSError, ValueError) as exc:
            if explicit:
                raise PricesError(f"config.cost.pricesFile: cannot use {path}: {exc}") from None
            log.error("prices: cannot use %s (%s); costs are unpriced until it is fixed", path, exc)
        watcher.start()
        telemetry.watcher = watcher
    traced = tracing_of(gw.config.config)
    if traced is not None:
        telemetry.tracer = tracing.start(traced)
    install(telemetry)
    return telemetry
