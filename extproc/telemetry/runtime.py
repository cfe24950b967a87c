"""The extproc process's telemetry: metrics, prices, CEL fields, built once from the config.

``start`` (the sidecar's startup) builds it, loads and watches the price table and serves
``/metrics``; ``current`` is what the usage-record stage uses (an empty default when nothing was
started: unit tests, embedded use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel

from extproc.config.base import parse_duration
from extproc.config.model import GlobalConfig
from extproc.gateway import Gateway, resolve_secret
from extproc.pipeline.exchange import Exchange
from extproc.telemetry import redact
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

    def __post_init__(self) -> None:
        self.needs = merge(self.log_fields.needs, self.metric_fields.needs)

    @classmethod
    def build(cls, cfg: GlobalConfig) -> Telemetry:
        metric_fields = FieldSet(cfg.metrics.fields.add)
        return cls(
            metrics=GatewayMetrics(
                cfg.metrics.prefix, tuple(cfg.metrics.fields.add), cfg.metrics.cardinality_limit
            ),
            prices=PriceTable(),
            log_fields=FieldSet(cfg.logging.fields.add),
            metric_fields=metric_fields,
            removed=frozenset(cfg.logging.fields.remove),
        )

    def cost_of(self, ex: Exchange) -> Cost:
        up = ex.upstream
        asked = (up.model if up is not None else None) or ex.request_model
        return self.prices.cost(ex.usage, [ex.response_model, asked], up.kind if up is not None else None)

    def context_of(self, ex: Exchange, cost: Cost | None) -> cel.Context | None:
        """One CEL context for both field sets, with only the variables they name."""
        if not self.log_fields and not self.metric_fields:
            return None
        names = self.log_fields.variables | self.metric_fields.variables
        prompt = self.log_fields.wants_prompt or self.metric_fields.wants_prompt
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
    if gw.config.config.tracing is not None:
        log.warning(
            "config.tracing is validated but not exported yet: OTLP export comes with the traces work"
        )
    install(telemetry)
    return telemetry
