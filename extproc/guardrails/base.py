"""What every guard is: a check of texts that allows, masks or rejects, and a filter for streams.

A guard kind (regex, webhook, openAIModeration, googleModelArmor, bedrockGuardrails, presidio) is
one ``Guard`` subclass, built once per route from its ``GuardSpec`` and shared by the route's
requests. ``check`` sees the texts of one phase in order (a request's texts of the guard's
scope, or an answer's choices) and returns a ``Verdict``; ``stream`` returns a per-request
``StreamFilter`` for a streamed answer's text. The regex guard has its own exact window; every
other guard (the remote ones) gets extproc/guardrails/overlap.py's: overlapping windows of
``streamBatch`` characters, each checked whole with ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc.config.guardrails import GuardSpec, Rejection
from extproc.guardrails.masker import DEFAULT_MAX_HOLD
from extproc.pipeline.stage import Denied

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange

# Actions, as decisions, metrics and the usage record name them.
ALLOW, MASK, REJECT, FAIL_OPEN, FAIL_CLOSED = "allow", "mask", "reject", "fail_open", "fail_closed"


@dataclass(frozen=True)
class TextItem:
    role: str
    scope: str
    text: str


@dataclass
class Verdict:
    action: str = ALLOW
    # One entry per text checked: its replacement, or None to leave it. A regex reject carries the
    # masked texts too, so a logged prompt never shows what was rejected.
    texts: list[str | None] | None = None
    status: int = 403
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    matched: list[str] = field(default_factory=list)  # rule names, categories: never the text
    # What decided instead of the guard's service while it could not be reached (presidio: "regex").
    fallback: str | None = None

    @property
    def blocks(self) -> bool:
        return self.action in (REJECT, FAIL_CLOSED)

    def error(self) -> Denied:
        code = "guardrail_unavailable" if self.action == FAIL_CLOSED else "guardrail_rejected"
        return Denied(self.status, self.message, code=code, headers=dict(self.headers) or None)


def rejected(rejection: Rejection, reason: str | None = None, matched: list[str] | None = None) -> Verdict:
    headers: dict[str, str] = {}
    if rejection.headers is not None:
        headers.update(rejection.headers.add)
        headers.update(rejection.headers.set)
    return Verdict(REJECT, None, rejection.status, rejection.body, headers, reason, matched or [])


def unavailable(kind: str, why: str) -> Verdict:
    return Verdict(FAIL_CLOSED, status=503, message=f"the {kind} guardrail is unavailable: {why}", reason=why)


class StreamRejected(Exception):
    """A stream filter found what its guard rejects: the stream ends with an error event."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


class StreamFilter:
    """One guard's view of one streamed text: text in, the text that may go on out."""

    def __init__(self) -> None:
        self.verdict = Verdict()  # what it decided so far, for the record

    async def feed(self, text: str) -> str:
        raise NotImplementedError

    async def flush(self) -> str:
        raise NotImplementedError


class Guard:
    kind = "guard"
    # Characters a streamed answer may be held back while a finding is undecided: the route's
    # promptGuard.streamMaxHold (set by extproc/guardrails/__init__.py's build).
    max_hold = DEFAULT_MAX_HOLD

    def __init__(self, spec: GuardSpec) -> None:
        self.spec = spec

    @property
    def scope(self) -> tuple[str, ...]:
        return self.spec.scope

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        raise NotImplementedError

    def stream(self, ex: Exchange) -> StreamFilter:
        from extproc.guardrails.overlap import OverlapWindow  # it builds on this module

        return OverlapWindow.of(self, ex)


_RANK = {ALLOW: 0, FAIL_OPEN: 1, MASK: 2, FAIL_CLOSED: 3, REJECT: 4}


def merge(into: Verdict, other: Verdict) -> None:
    """A stream's decision so far: the strongest action, every match."""
    if _RANK[other.action] > _RANK[into.action]:
        into.action, into.reason = other.action, other.reason
    into.matched += [m for m in other.matched if m not in into.matched]
    into.fallback = into.fallback or other.fallback


def record(ex: Exchange, phase: str, guard: Guard, verdict: Verdict) -> None:
    """The decision on the exchange: the usage record's ``guardrails`` field and the metric."""
    entry: dict[str, Any] = {"phase": phase, "guard": guard.kind, "action": verdict.action}
    if verdict.matched:
        entry["matched"] = list(verdict.matched)
    if verdict.reason:
        entry["reason"] = verdict.reason
    if verdict.fallback:
        entry["fallback"] = verdict.fallback
    ex.guardrails.append(entry)
