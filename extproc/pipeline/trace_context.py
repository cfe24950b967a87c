"""The router phase's part in a trace: where the exchange's trace begins, and what it passes on.

- request headers: the exchange's ``Trace`` (Envoy's span as parent: extproc/telemetry/tracing.py);
- the routing decision: the chat span's context, for the upstream phase's attempt spans;
- single-provider routes (no upstream phase): the attempt's context in ``traceparent`` and in
  ``x-gw-traceparent`` (Envoy's router writes its own ``traceparent`` after this phase; an
  upstream header mutation then puts the gateway's back: render/tracing.py);
- the answer's headers: the upstream phase's answering attempt, taken off the client's answer.

All of it is a no-op when tracing is off (``Exchange.trace`` is None).
"""

from __future__ import annotations

import time

from extproc.pipeline.exchange import Exchange
from extproc.telemetry import runtime, tracing


def begin(ex: Exchange, envoy_parent: str | None) -> None:
    tracer = runtime.current().tracer
    if tracer is not None:
        ex.trace = tracer.begin(envoy_parent, ex.headers)
        ex.trace.method = ex.method


def decision_keys(ex: Exchange) -> dict[str, str]:
    tr = ex.trace
    if tr is None:
        return {}
    keys = {tracing.TRACE_KEY: tr.header()}
    if tr.tracestate:
        keys[tracing.TRACESTATE_KEY] = tr.tracestate
    return keys


def direct_egress(ex: Exchange, set_headers: dict[str, str], path: str) -> None:
    tr = ex.trace
    if tr is None:
        return
    header = tr.attempt_header()
    set_headers["traceparent"] = header  # also right where Envoy does not trace
    set_headers[tracing.DIRECT_HEADER] = header
    tr.sent_ns, tr.path = time.time_ns(), path


def answer_headers(ex: Exchange, headers: dict[str, str]) -> list[str]:
    """Headers to take off the client's answer."""
    tr = ex.trace
    if tr is None:
        return []
    tr.handoff = headers.get(tracing.ATTEMPT_HEADER)
    return [tracing.ATTEMPT_HEADER]
