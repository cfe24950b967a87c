"""The gateway's Prometheus metrics: OTel GenAI instruments and request counters.

Names, units and buckets follow OTel's GenAI conventions as agentgateway exposes them (so its
queries keep working with ``config.metrics.prefix: agentgateway``, the default):

- ``gen_ai_client_token_usage`` (histogram, tokens) by ``gen_ai_token_type``: ``input``, ``output``,
  and the parts ``input_cache_read``, ``input_cache_write``, ``output_reasoning`` (recorded when
  non-zero: input already includes the cache, output the reasoning);
- ``gen_ai_server_request_duration``, ``gen_ai_server_time_to_first_token`` (streams),
  ``gen_ai_server_time_per_output_token`` (streams) in seconds;
- ``gen_ai_client_cost_usd_total``; ``cost_catalog_lookups_total`` by ``status`` (found, missing);
- ``requests_total`` by ``api``, ``status``, ``outcome`` (every request, rejected ones included);
- ``retries_total`` (failed attempts, by the provider that failed), ``failovers_total`` (answers
  that came after a failed attempt, by the provider that answered);
- ``guardrail_checks_total`` by ``route``, ``phase`` (request, response), ``guard`` (regex, webhook,
  openAIModeration, googleModelArmor, bedrockGuardrails, presidio) and ``action`` (allow, mask,
  reject, fail_open, fail_closed);
- ``budget_decisions_total`` by ``route`` and ``decision`` (allow, deny, unpriced, fail_open,
  fail_closed): one per request a dollar budget applied to (extproc/pipeline/stages/budget.py).
- ``quota_used``, ``quota_limit`` (the limit in force: an admin override, else the configured
  one), ``quota_remaining`` (gauges) by ``quota`` (``rateLimits/<domain>/<path>``), ``period``,
  ``unit`` and the subject's ``api_key_id``, ``user_id``, ``group_id``, ``model``, ``route`` (empty
  when the subject has none): set at each rate limit decision and each admin API change of that
  subject, and read again from the store every 15 s by each worker for the subjects it has seen
  (settled tokens, other replicas, a new period): at most that old (extproc/limits/managed.py).
  Dollar budgets are quotas too: ``quota="budget/<scope>/<period>"`` (``budget/group_id/month``),
  ``unit="usd"``, the values in dollars (the counters' micro-dollars / 1e6), set at each budget
  decision (the spend includes the reservations held) and each admin change.
- ``guardrail_fallbacks_total`` by ``route``, ``phase``, ``guard`` and ``fallback``: decisions a stand-in
  made while the guard's service was unreachable (presidio's regex fallback).

Common labels: ``route``, ``provider`` (the config's name), ``gen_ai_operation_name``,
``gen_ai_provider_name``, ``gen_ai_request_model`` (the model asked of the provider),
``gen_ai_response_model``, then the ``config.metrics.fields.add`` labels.

Several extproc workers: the supervisor sets PROMETHEUS_MULTIPROC_DIR (before prometheus_client
is imported), every worker writes its samples there, and whichever worker is scraped reads them
all, so the numbers are exact whichever worker served a request.

Cardinality: models and added labels come from clients and tokens. Past ``cardinalityLimit``
distinct label sets (per worker), new ones are counted under the value ``__overflow__``, and the
first time that happens it is logged. Quota subjects count against the same limit; past it, a new
subject's quota gauges are not exported (one overflow series of gauges would mix subjects).
The quota gauges are ``mostrecent`` across workers: the latest value any worker wrote, which is
the freshest view of a counter in Redis.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import prometheus_client as prom
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from extproc.gateway import GENAI_PROVIDER_NAME
from extproc.limits.managed import GAUGE_LABELS

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange
    from extproc.telemetry.prices import Cost

log = logging.getLogger("gateway.metrics")

prom.disable_created_metrics()  # no _created series: half the series, nothing lost for rate()

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

COMMON = (
    "route",
    "provider",
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)
OVERFLOW = "__overflow__"
_OPERATION = {"completions": "chat", "messages": "chat", "embeddings": "embeddings"}


@dataclass(slots=True)
class _Series:
    """One label set's common values and its children, by (metric, the labels after the common ones)."""

    common: tuple[str, ...]
    extras: tuple[str, ...]  # the added labels as bounded (``__overflow__`` past the limit)
    children: dict[tuple[int, tuple[str, ...]], Any]


@dataclass(slots=True)
class _QuotaSeries:
    """The gauges of one quota for one subject, and the limit they were last set to."""

    used: Any
    limit: Any
    remaining: Any
    last_limit: float | None = None


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class GatewayMetrics:
    def __init__(self, prefix: str = "agentgateway", extra: tuple[str, ...] = (), limit: int = 2000) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.extra = extra
        self.limit = limit
        self._keys: set[tuple[str, ...]] = set()
        self._overflowed = False
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._quota: dict[tuple[str, ...], _QuotaSeries] = {}  # a quota's labels -> its gauges
        # observe's label sets by the exchange's raw values: one lookup per request finds the common
        # labels (bounded) and their children. Bounded: past the limit raw values map to overflow.
        self._series: dict[tuple[Any, ...], _Series] = {}
        common = (*COMMON, *extra)
        ns = prefix

        def hist(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, namespace=ns, buckets=buckets, registry=self.registry)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=self.registry)

        self.tokens = hist(
            "gen_ai_client_token_usage",
            "Tokens per request by gen_ai_token_type (input includes the cache parts).",
            (*common, "gen_ai_token_type"),
            TOKEN_BUCKETS,
        )
        self.duration = hist(
            "gen_ai_server_request_duration",
            "Seconds from the request's headers to its last byte.",
            (*common, "error_type"),
            DURATION_BUCKETS,
        )
        self.ttft = hist(
            "gen_ai_server_time_to_first_token",
            "Seconds to the first byte of a streamed answer.",
            common,
            TTFT_BUCKETS,
        )
        self.tpot = hist(
            "gen_ai_server_time_per_output_token",
            "Seconds per output token after the first, in streamed answers.",
            common,
            TPOT_BUCKETS,
        )
        self.cost = counter("gen_ai_client_cost_usd", "Cost of answers in USD (priced models only).", common)
        self.lookups = counter(
            "cost_catalog_lookups", "Price lookups by status: found, missing.", (*common, "status")
        )
        self.requests = counter(
            "requests", "Requests by api, status and outcome.", (*common, "api", "status", "outcome")
        )
        self.retries = counter(
            "retries", "Failed provider attempts that were retried.", ("route", "provider", *extra)
        )
        self.failovers = counter("failovers", "Answers after at least one failed attempt.", common)
        self.guardrails = counter(
            "guardrail_checks",
            "Guardrail decisions by phase, guard and action.",
            ("route", "phase", "guard", "action"),
        )
        self.budgets = counter(
            "budget_decisions", "Budget decisions by route and decision.", ("route", "decision")
        )
        self.guardrail_fallbacks = counter(
            "guardrail_fallbacks",
            "Guardrail decisions made by a fallback while the guard's service was unreachable.",
            ("route", "phase", "guard", "fallback"),
        )

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, GAUGE_LABELS, namespace=ns, registry=self.registry,
                         multiprocess_mode="mostrecent")  # fmt: skip

        self.quota_used = gauge("quota_used", "A quota's use in its current period.")
        self.quota_limit = gauge("quota_limit", "A quota's limit in force (an override, else the file's).")
        self.quota_remaining = gauge("quota_remaining", "What is left of a quota in its current period.")

    def _child(self, metric: Counter | Histogram | Gauge, values: tuple[str, ...]) -> Any:
        """``metric.labels(*values)``, remembered: labels() validates and locks on every call,
        a dict lookup does not (measured: 33 us per request before, with a dozen series)."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def _bounded(self, models: tuple[str, str], extras: tuple[str, ...]) -> tuple[tuple[str, str], tuple]:
        """The client-driven label values, or ``__overflow__`` once the limit is reached."""
        key = (*models, *extras)
        if key in self._keys:
            return models, extras
        if len(self._keys) < self.limit:
            self._keys.add(key)
            return models, extras
        if not self._overflowed:
            self._overflowed = True
            log.warning(
                "metrics: %d distinct label sets reached (config.metrics.cardinalityLimit); new models "
                "and field values are counted as %s from now on",
                self.limit,
                OVERFLOW,
            )
        return (OVERFLOW, OVERFLOW), tuple(OVERFLOW for _ in extras)

    def observe_quota(self, labels: tuple[str, ...], used: float, limit: float) -> None:
        """One quota for one subject, as a decision or an admin change just found it. Every
        decision sets them: its three gauges are found with one lookup, and the limit (which
        seldom changes) is set only when it did."""
        series = self._quota.get(labels)
        if series is None:
            key = ("\0quota", *labels)
            if key not in self._keys:
                if len(self._keys) >= self.limit:
                    if not self._overflowed:
                        self._overflowed = True
                        log.warning(
                            "metrics: %d distinct label sets reached (config.metrics.cardinalityLimit); "
                            "quotas of new subjects are not exported from now on", self.limit
                        )  # fmt: skip
                    return
                self._keys.add(key)
            child = self._child
            series = self._quota[labels] = _QuotaSeries(
                child(self.quota_used, labels), child(self.quota_limit, labels),
                child(self.quota_remaining, labels),
            )  # fmt: skip
        series.used.set(used)
        series.remaining.set(max(0.0, limit - used))
        if series.last_limit != limit:
            series.limit.set(limit)
            series.last_limit = limit

    def quota_series(self) -> list[tuple[str, ...]]:
        """The label sets of the quota gauges this process exports."""
        return [key[1:] for key in self._keys if key[0] == "\0quota"]

    def _series_of(self, ex: Exchange, extras: tuple[str, ...]) -> _Series:
        up = ex.upstream
        request_model = (up.model if up is not None else None) or ex.request_model or ""
        key = (
            ex.route.name,
            up.name if up is not None else None,
            up.kind if up is not None else None,
            ex.api,
            request_model,
            ex.response_model or "",
            extras,
        )
        series = self._series.get(key)
        if series is None:
            models, bounded = self._bounded((request_model, ex.response_model or ""), extras)
            common = (
                ex.route.name,
                up.name if up is not None else "",
                _OPERATION.get(ex.api, ex.api),
                GENAI_PROVIDER_NAME.get(up.kind, up.kind) if up is not None else "",
                *models,
                *bounded,
            )
            if len(self._series) >= 4 * self.limit + 64:
                self._series.clear()
            series = self._series[key] = _Series(common, bounded, {})
        return series

    def _of(self, series: _Series, metric: Counter | Histogram, labels: tuple[str, ...] = ()) -> Any:
        """The child of ``metric`` for the series' common labels followed by ``labels``."""
        key = (id(metric), labels)
        found = series.children.get(key)
        if found is None:
            found = series.children[key] = self._child(metric, (*series.common, *labels))
        return found

    def observe(self, ex: Exchange, cost: Cost, extras: tuple[str, ...]) -> None:
        """One completed exchange: every metric it moves, from the same fields as its log line."""
        up = ex.upstream
        series = self._series_of(ex, extras)
        extras = series.extras
        child, of = self._child, self._of
        of(series, self.requests, (ex.api, str(ex.status), ex.outcome)).inc()
        for attempt in ex.attempts:
            if attempt.outcome == "retried":
                child(self.retries, (ex.route.name, attempt.provider, *extras)).inc()
        if len(ex.attempts) > 1 and ex.attempts[-1].outcome == "answered":
            of(series, self.failovers).inc()
        for decision in ex.guardrails:
            labels = (ex.route.name, decision["phase"], decision["guard"], decision["action"])
            child(self.guardrails, labels).inc()
            if decision.get("fallback"):
                child(self.guardrail_fallbacks, (*labels[:3], decision["fallback"])).inc()
        if ex.budget is not None:
            child(self.budgets, (ex.route.name, ex.budget["decision"])).inc()
        if ex.api == "models" or up is None:
            return
        if ex.ended is not None:
            error = "" if ex.outcome == "ok" else ex.outcome
            of(series, self.duration, (error,)).observe(ex.ended - ex.started)
        usage = ex.usage
        if usage is not None:
            tokens = self.tokens
            of(series, tokens, ("input",)).observe(usage.input_tokens)
            of(series, tokens, ("output",)).observe(usage.output_tokens)
            for kind, n in (
                ("input_cache_read", usage.cache_read_tokens),
                ("input_cache_write", usage.cache_write_tokens),
                ("output_reasoning", usage.reasoning_tokens),
            ):
                if n:
                    of(series, tokens, (kind,)).observe(n)
            of(series, self.lookups, ("found" if cost.status == "priced" else "missing",)).inc()
            if cost.usd is not None:
                of(series, self.cost).inc(cost.usd)
        if ex.stream and ex.first_token is not None:
            of(series, self.ttft).observe(ex.first_token - ex.started)
            out = usage.output_tokens if usage is not None else 0
            if ex.ended is not None and out > 1:
                of(series, self.tpot).observe((ex.ended - ex.first_token) / (out - 1))

    def observe_rejected(self, route: str, api: str, status: int, extras: tuple[str, ...]) -> None:
        """A request Envoy answered before the pipeline saw it (authz denial, 413, no route)."""
        _, extras = self._bounded(("", ""), extras)
        common = (route, "", _OPERATION.get(api, api), "", "", "", *extras)
        self.requests.labels(*common, api, str(status), "rejected").inc()

    def exposition(self) -> bytes:
        """The text format: this worker's registry, or every worker's in multiprocess mode."""
        path = multiprocess_dir()
        if path:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            return prom.generate_latest(registry)
        return prom.generate_latest(self.registry)
