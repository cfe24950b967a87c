"""The usage record: one structured JSON line per request, written when it completes,
and the request's metrics, from the same fields.

Cost, metrics, traces and the ledger (extproc/ledger/) read the same exchange, so each number has one
source: the translators' usage and the exchange's timings (extproc/telemetry/).
"""

from __future__ import annotations

import datetime
from typing import Any

from extproc import usage_log
from extproc.ledger import runtime as ledger
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Needs, Stage
from extproc.telemetry import runtime
from extproc.telemetry.prices import Cost


def record_of(ex: Exchange, cost: Cost | None = None) -> dict[str, Any]:
    up = ex.upstream
    usage = ex.usage
    return {
        "type": "llm_request",
        "request_id": ex.request_id,
        "client_request_id": ex.client_request_id,
        "timestamp": datetime.datetime.fromtimestamp(ex.started_wall, datetime.UTC).isoformat(
            timespec="milliseconds"
        ),
        "route": ex.route.name,
        "api": ex.api,
        "method": ex.method,
        "path": ex.path,
        "http_status_code": ex.status,
        "outcome": ex.outcome,
        "error": ex.error,
        "provider": up.name if up else None,
        "provider_kind": up.kind if up else None,
        "request_model": ex.request_model,
        "response_model": ex.response_model,
        "stream": ex.stream,
        "attempt_count": len(ex.attempts),
        "attempts": [
            {"number": a.number, "provider": a.provider, "outcome": a.outcome, "status": a.status}
            for a in ex.attempts
        ],
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
        "cache_read_tokens": usage.cache_read_tokens if usage else None,
        "cache_write_tokens": usage.cache_write_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "cost_usd": cost.usd if cost else None,
        "cost_status": cost.status if cost else None,  # priced, unpriced, no_usage
        "duration_ms": ex.elapsed_ms(ex.ended),
        "time_to_first_byte_ms": ex.elapsed_ms(ex.first_byte),
        "time_to_first_token_ms": ex.elapsed_ms(ex.first_token) if ex.stream else None,
        "user_id": ex.identity.get("user_id"),
        "api_key_id": ex.identity.get("api_key_id"),
        "group_id": ex.identity.get("group_id"),
        # Each guardrail decision: {phase, guard, action, matched?, reason?}; never the text itself.
        "guardrails": ex.guardrails,
        # The budget stage's decision (allow, deny, unpriced, fail_open, fail_closed), what it
        # reserved and charged in USD, and the budgets that applied; null when none did.
        "budget": ex.budget,
    }


class UsageRecord(Stage):
    name = "usage_record"
    # Usage is in the answer's body (or the stream's last events), so the response must come back.
    needs = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY

    async def on_complete(self, ex: Exchange) -> None:
        t = runtime.current()
        cost = t.cost_of(ex)
        ctx = t.context_of(ex, cost)
        record = record_of(ex, cost)
        ledger.submit(record)  # its row is taken now: log_line below edits the dict
        usage_log.write(t.log_line(record, ctx))
        t.metrics.observe(ex, cost, t.label_values(ctx))
        t.trace(ex, cost, ctx)
