"""One provider attempt's span, as the upstream phase sees it (once per attempt, multi-provider routes).

The attempt begins at the upstream phase's request headers: a span id of its own, a child of the
router phase's chat span (from the routing decision's metadata), and the provider receives that
context in ``traceparent``. When sampled, the phase asks Envoy for the attempt's response headers:

- an error status (a 429 or 503 that Envoy may retry on another provider, or the last answer): the
  attempt is over, its span is recorded here;
- an answer: its body may stream for minutes after this phase's gRPC stream has closed (Envoy
  closes it after the last phase it was asked for), so the span's id, start and number go to the
  router phase on the answer's headers (``ATTEMPT_HEADER``), which records it when the answer ends;
- no response at all (connection refused, reset, per-try timeout): recorded when the stream closes.
"""

from __future__ import annotations

import time

from extproc.gateway import Upstream
from extproc.telemetry import spans, tracing


class AttemptSpan:
    def __init__(
        self, tracer: tracing.Tracer, parent: tuple[int, int, bool], number: int, up: Upstream, api: str
    ) -> None:
        self.tracer = tracer
        self.trace_id, self.parent_id, self.sampled = parent
        self.span_id = tracing.new_span_id()
        self.start_ns = time.time_ns()
        self.number, self.up, self.api = number, up, api
        self.method = "POST"
        self.path: str | None = None
        self.done = False

    @classmethod
    def begin(
        cls, tracer: tracing.Tracer | None, metadata: dict[str, str], number: int, up: Upstream, api: str
    ) -> AttemptSpan | None:
        parent = tracing.parse_traceparent(metadata.get(tracing.TRACE_KEY))
        if tracer is None or parent is None:
            return None
        return cls(tracer, parent, number, up, api)

    def headers(self, tracestate: str = "") -> dict[str, str]:
        """The provider's trace context: this attempt's span."""
        out = {"traceparent": tracing.traceparent(self.trace_id, self.span_id, self.sampled)}
        if tracestate:
            out["tracestate"] = tracestate
        return out

    def on_response(self, status: int) -> dict[str, str]:
        """Response headers to set: the hand-over to the router phase when this attempt answered."""
        self.done = True
        if status >= 400:
            self._record(status, f"the provider answered {status}")
            return {}
        return {tracing.ATTEMPT_HEADER: tracing.handoff(self.span_id, self.start_ns, self.number)}

    def close(self) -> None:
        if not self.done:
            self.done = True
            self._record(None, "no response from the provider (connection failed, reset or timed out)")

    def _record(self, status: int | None, error: str) -> None:
        if not self.sampled:
            return
        attrs = spans.attempt_attributes(self.up, self.api, self.number, status, self.method, self.path)
        self.tracer.emit(
            spans.attempt_name(self.number, self.up),
            self.trace_id,
            self.span_id,
            self.parent_id,
            attrs,
            self.start_ns,
            time.time_ns(),
            error,
        )
