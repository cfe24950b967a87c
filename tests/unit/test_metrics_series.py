"""The metrics' per-label-set cache answers as the uncached lookups would, past the cardinality limit too."""

from __future__ import annotations

import time
from types import SimpleNamespace

from extproc.telemetry.metrics import OVERFLOW, GatewayMetrics
from extproc.telemetry.prices import Cost
from extproc.translate.usage import Usage


def exchange(model: str) -> SimpleNamespace:
    now = time.monotonic()
    return SimpleNamespace(
        upstream=SimpleNamespace(model=None, name="p", kind="openai"),
        request_model=model,
        response_model=model,
        route=SimpleNamespace(name="r"),
        api="completions",
        status=200,
        outcome="ok",
        attempts=[SimpleNamespace(outcome="answered")],
        guardrails=[],
        budget=None,
        started=now - 0.05,
        ended=now,
        usage=Usage(10, 5),
        stream=False,
        first_token=None,
    )


def requests(m: GatewayMetrics, model: str) -> float:
    labels = {"gen_ai_request_model": model, "gen_ai_response_model": model}
    value = m.registry.get_sample_value(
        "agentgateway_requests_total",
        {"route": "r", "provider": "p", "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
         **labels, "api": "completions", "status": "200", "outcome": "ok"},
    )  # fmt: skip
    return value or 0.0


def test_label_sets_past_the_limit_count_as_overflow_before_and_after_the_cache_is_emptied() -> None:
    m = GatewayMetrics(limit=2)
    cost = Cost(None, "unpriced")
    for _ in range(2):
        for model in ("a", "b", "c"):
            m.observe(exchange(model), cost, ())
        m._series.clear()  # as when it fills up: the answers must not change
    assert (requests(m, "a"), requests(m, "b"), requests(m, "c")) == (2.0, 2.0, 0.0)
    assert requests(m, OVERFLOW) == 2.0
    tokens = m.registry.get_sample_value(
        "agentgateway_gen_ai_client_token_usage_sum",
        {"route": "r", "provider": "p", "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
         "gen_ai_request_model": "a", "gen_ai_response_model": "a", "gen_ai_token_type": "output"},
    )  # fmt: skip
    assert tokens == 10.0
