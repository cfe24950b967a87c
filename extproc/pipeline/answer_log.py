"""Whole answers accounted from Envoy's access log (``limits.answersFromAccessLog``).

On a route whose stages only observe the answer (the usage record), a request that Envoy says
will not stream (render/answer_log.py) skips the answer's two ext_proc messages: the router phase
parks its exchange here once the request has gone on, and Envoy's access log entry, when the
request ends, carries what the answer's messages would have told (status, timings, attempts, and
the answer's usage and model as Envoy read them). The exchange completes from that entry, with
the same stages, so the log line, metrics, cost and ledger row are what the sidecar would have
made of the answer itself.

The entry comes to whichever process holds the Envoy thread's connection to the sidecar, which
is the one that parked the exchange only when there is one worker: the router phase uses this
path only then (``one_worker``). An exchange whose entry never comes (Envoy gone, its log
dropped) is completed without usage once its route's timeout and a minute have passed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.data.accesslog.v3 import accesslog_pb2

from extproc.errors import GatewayError
from extproc.gateway import Gateway
from extproc.headers import ANSWER_FACTS, ANSWER_FIELDS, ANSWER_LOGGED, METADATA_NAMESPACE, REQUEST_ID
from extproc.pipeline.answer import usage_format
from extproc.pipeline.attempts import attempts_of
from extproc.pipeline.completion import Completion
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.reply import Reply
from extproc.pipeline.stage import Stage
from extproc.translate import usage as usage_mod

if TYPE_CHECKING:
    from extproc.pipeline.route_facts import RouteFacts
    from extproc.pipeline.stages import RoutePipeline

log = logging.getLogger("gateway.answer_log")

# The usage readers whose fields Envoy copies (headers.ANSWER_FIELDS): chat answers in the
# client's own format (embeddings answers are rebuilt by the translator, so never qualify).
FORMATS = frozenset({"openai", "anthropic"})
_APIS = frozenset({"completions", "messages"})
_PARKED_MAX = 100_000
_GRACE = 60.0  # seconds past the route's timeout before an entry is given up on
LOST = "Envoy's access log entry for this request never reached the gateway"


def format_for(
    gw: Gateway, pipeline: RoutePipeline, facts: RouteFacts, ex: Exchange, stream_flag: bool | None
) -> str | None:
    """The usage format of the answer, when Envoy's access log can carry it instead of the answer's
    messages (at request headers): Envoy read ``stream: false`` (or none) in the body; the
    route's one provider answers in the client's format, which Envoy's rules read; no stage but
    the usage record reads the answer; the request is not traced (its span wants the finish
    reasons, in the answer's choices); one worker."""
    if stream_flag is not False or not gw.limits.answers_from_access_log or not PARKED.one_worker:
        return None
    up = facts.direct
    if up is None or not pipeline.observes_only or ex.api not in _APIS or facts.translates(ex.api):
        return None
    if ex.trace is not None and ex.trace.sampled:
        return None
    fmt = usage_format(up, ex.api, up.model or "")
    return fmt if fmt in FORMATS else None


def park(reply: Reply, ex: Exchange, stages: list[Stage], fmt: str, timeout: float) -> None:
    """The request goes on marked for the access log, its exchange parked until the entry comes.
    A body the sidecar parsed as a stream, where Envoy read it would not, is refused instead."""
    if ex.stream:
        raise disagreement()
    reply.metadata = {**(reply.metadata or {}), ANSWER_LOGGED: "1"}  # Envoy logs it to the sidecar
    PARKED.park(ex, stages, fmt, ex.route.timeout_seconds(timeout))


def disagreement() -> GatewayError:
    """The body the sidecar parsed streams, where Envoy read that it does not: never sent on."""
    return GatewayError(
        400,
        "the request body's stream field could not be read the same way twice; send it once",
        code="invalid_request",
    )


@dataclass(slots=True)
class _Parked:
    ex: Exchange
    stages: list[Stage]
    fmt: str
    give_up: float  # monotonic


class AnswerLog:
    def __init__(self) -> None:
        self._parked: dict[str, _Parked] = {}
        self.one_worker = True  # set by the CLI: several workers share the port

    def park(self, ex: Exchange, stages: list[Stage], fmt: str, timeout: float) -> None:
        now = time.monotonic()
        self._parked[ex.request_id] = _Parked(ex, stages, fmt, now + timeout + _GRACE)
        if len(self._parked) > _PARKED_MAX:
            log.warning("%d answers wait for Envoy's access log: the oldest are given up", _PARKED_MAX)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._parked

    async def on_entry(self, entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
        """Completes the exchange the entry is for; False when none waits for it."""
        ns = entry.common_properties.metadata.filter_metadata.get(METADATA_NAMESPACE)
        found = ns.fields.get(REQUEST_ID) if ns is not None else None
        parked = self._parked.pop(found.string_value, None) if found is not None else None
        if parked is None:
            return False
        complete_from_entry(parked.ex, parked.fmt, entry)
        await Completion().end(parked.ex, parked.stages)
        await self.sweep()
        return True

    async def sweep(self, now: float | None = None) -> None:
        """Gives up on the exchanges whose entry is overdue (the oldest first), or too many."""
        now = time.monotonic() if now is None else now
        while self._parked:
            request_id, oldest = next(iter(self._parked.items()))
            if oldest.give_up > now and len(self._parked) <= _PARKED_MAX:
                return
            del self._parked[request_id]
            ex = oldest.ex
            log.error("request %s: %s; recorded without its answer", request_id, LOST)
            ex.completed, ex.error = True, LOST
            ex.status, ex.outcome, ex.ended = ex.status or 502, "gateway_error", now
            await Completion().end(ex, oldest.stages)


def _seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def complete_from_entry(ex: Exchange, fmt: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
    """The exchange's end as Envoy logged it: what the answer's messages would have set."""
    props, resp = entry.common_properties, entry.response
    status = resp.response_code.value
    details = resp.response_code_details
    flags = props.response_flags
    up = ex.route.direct_upstream
    ex.upstream = up
    count = str(props.upstream_request_attempt_count) if props.upstream_request_attempt_count else ""
    if props.HasField("time_to_first_upstream_rx_byte"):
        ex.first_byte = ex.started + _seconds(props.time_to_first_upstream_rx_byte)
    if status:  # an answer came, from the provider or from Envoy
        ex.attempts = attempts_of(ex.route, up, count, details, status)
    took = props.duration if props.HasField("duration") else props.time_to_last_downstream_tx_byte
    if details and details != "via_upstream":
        outcome, ex.error = "envoy_error", details  # Envoy's own reply (a timeout, no upstream)
    elif flags.downstream_connection_termination or not status:
        outcome, status = "client_disconnected", status or 499
        ex.error = "the client closed its connection before the answer was complete"
    elif flags.upstream_remote_reset or flags.upstream_connection_termination:
        outcome = "stream_cut"
        ex.error = "the provider's connection was cut before the answer was complete"
    else:
        outcome = "ok" if status < 400 else "provider_error"
    if status == 200 and outcome in ("ok", "client_disconnected"):
        facts = entry.common_properties.metadata.filter_metadata.get(ANSWER_FACTS)
        if facts is not None:
            ex.usage, ex.response_model = usage_mod.usage_of(fmt, answer_body(facts.fields))
    ex.completed = True
    ex.status, ex.outcome, ex.ended = status, outcome, ex.started + _seconds(took)


def answer_body(fields: Any) -> dict[str, Any]:
    """The answer's fields Envoy copied, in the body's own shape, for the body's usage reader."""
    body: dict[str, Any] = {}
    for key, path in ANSWER_FIELDS.items():
        value = fields.get(key)
        if value is None:
            continue
        at = body
        for step in path[:-1]:
            at = at.setdefault(step, {})
        at[path[-1]] = _plain(value)
    return body


def _plain(value: Any) -> Any:
    """A protobuf Value as the JSON parser would have given it (a whole number is an int)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() else n
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


PARKED = AnswerLog()
