"""The Presidio guard: Microsoft Presidio's analyzer finds PII, its anonymizer writes the masked text.

Each text is analyzed (``entities``, ``scoreThreshold``, ``language``); a text with findings is
masked with the anonymizer's answer for it (``anonymizers``: Presidio's operators), or, with
``action: reject``, the request or answer is rejected with the guard's rejection (the logged
prompt shows ``<ENTITY>`` in their place). A streamed answer goes through every remote guard's
overlapping window (extproc/guardrails/overlap.py) as ``PresidioWindow``: the analyzer says where
its findings are, so a window is let go up to the start of any entity it would split, with the
last ``streamOverlap`` characters let go as context, and the anonymizer masks what goes.

When Presidio cannot be asked (unreachable, too slow, an error or an unreadable answer), a
``fallback`` regex guard decides instead, as the blog's gateway does: a warning says so, the
decision carries ``fallback: regex`` (the usage record, ``guardrail_fallbacks_total``). Without
one, ``failureMode`` decides: failClosed (503, the default) or failOpen. Mid-stream the
fallback's exact window takes over the rest of the text (or failOpen lets it go unchecked, or
failClosed ends the stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from extproc.config.base import parse_duration
from extproc.config.guard_parts import RegexRule
from extproc.config.guardrails import GuardSpec
from extproc.config.guardrails import RegexGuard as RegexConfig
from extproc.config.presidio import Presidio, PresidioFallback
from extproc.guardrails.base import (
    ALLOW,
    FAIL_OPEN,
    MASK,
    Guard,
    StreamFilter,
    StreamRejected,
    TextItem,
    Verdict,
    merge,
    rejected,
    unavailable,
)
from extproc.guardrails.http import GuardCallError, call_timeout
from extproc.guardrails.masker import DEFAULT_MAX_HOLD
from extproc.guardrails.overlap import OverlapWindow, Reading, Span, StandIn
from extproc.guardrails.presidio_api import Entity, PresidioAPI, kinds, placeholders
from extproc.guardrails.regex_guard import RegexFilter, RegexGuard
from extproc.guardrails.stream import PassThrough

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange

log = logging.getLogger("gateway.guardrails")


def fallback_config(config: Presidio) -> RegexConfig | None:
    """The regex guard that stands in for Presidio, with the Presidio guard's action."""
    fallback = config.fallback
    if fallback is None:
        return None
    if isinstance(fallback, PresidioFallback):
        rules, replacement = fallback.regex.rules, fallback.regex.replacement
    else:
        rules = [
            RegexRule(builtin=builtin, replacement=_token(config, entity))
            for builtin, entity in config.fallback_builtins()
        ]
        replacement = None
    return RegexConfig(action=config.action, rules=rules, replacement=replacement)


def _token(config: Presidio, entity: str) -> str:
    """What Presidio's anonymizer would write for ``entity`` with a replace operator (else ``<ENTITY>``)."""
    for key in (entity, "DEFAULT"):
        operator = config.anonymizers.get(key)
        if operator is not None:
            value = operator.get("new_value")
            if operator.get("type") == "replace" and isinstance(value, str):
                return value
            break
    return f"<{entity}>"


def _once(lists: Iterable[list[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names))


class PresidioGuard(Guard):
    kind = "presidio"

    def __init__(self, spec: GuardSpec, max_hold: int = DEFAULT_MAX_HOLD) -> None:
        super().__init__(spec)
        config: Presidio = spec.config
        self.config = config
        self.api = PresidioAPI(config)
        self.reject = config.action == "reject"
        configured = None if config.timeout is None else parse_duration(config.timeout)
        self.timeout = call_timeout(configured, f"presidio {self.api.analyze_url}")
        stand_in = fallback_config(config)
        self.fallback = (
            RegexGuard(GuardSpec(spec.phase, "regex", stand_in, spec.rejection, spec.scope), max_hold)
            if stand_in is not None
            else None
        )

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.timeout

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        texts = [i.text for i in items]
        deadline = self.deadline()
        try:
            found = await asyncio.gather(*(self.api.analyze(t, deadline) for t in texts))
            if not any(found):
                return Verdict(ALLOW)
            if self.reject:
                verdict = rejected(self.spec.rejection, matched=_once(kinds(f) for f in found))
                verdict.texts = [placeholders(t, f) if f else None for t, f in zip(texts, found, strict=True)]
                return verdict
            masked = await asyncio.gather(
                *(self._anonymize(t, f, deadline) for t, f in zip(texts, found, strict=True))
            )
        except GuardCallError as exc:
            return self.unavailable(phase, texts, str(exc))
        return Verdict(MASK, [m[0] if m else None for m in masked], matched=_once(m[1] for m in masked if m))

    async def _anonymize(
        self, text: str, found: list[Entity], deadline: float
    ) -> tuple[str, list[str]] | None:
        return await self.api.anonymize(text, found, deadline) if found else None

    def unavailable(self, phase: str, texts: list[str], why: str) -> Verdict:
        """The fallback's verdict on ``texts``, or the failure mode's."""
        if self.fallback is not None:
            self.log_fallback(phase, why)
            verdict = self.fallback.check_texts(texts)
            verdict.fallback, verdict.reason = "regex", why
            return verdict
        return self.failed(why)

    def log_fallback(self, phase: str, why: str) -> None:
        log.warning(
            "presidio guardrail %s unavailable (%s): the regex fallback checks the %s",
            self.api.analyze_url,
            why,
            phase,
        )

    def failed(self, why: str) -> Verdict:
        if self.config.failure_mode == "failOpen":
            log.warning("presidio guardrail %s unavailable (%s): failing open", self.api.analyze_url, why)
            return Verdict(FAIL_OPEN, reason=why)
        log.warning("presidio guardrail %s unavailable (%s): failing closed", self.api.analyze_url, why)
        return unavailable("presidio", why)

    def stream(self, ex: Exchange) -> StreamFilter:
        return PresidioWindow.of(self, ex)


class PresidioWindow(OverlapWindow):
    """A streamed text through Presidio: the analyzer finds where, the anonymizer masks what goes."""

    context = True  # the analyzer sees the text before each window (context words, word boundaries)
    guard: PresidioGuard
    deadline = 0.0  # the current window's: its analyzer and anonymizer calls share one budget

    async def read(self, text: str, start: int) -> Reading:
        self.deadline = self.guard.deadline()  # one budget for a window's two calls
        try:
            found = await self.guard.api.analyze(text, self.deadline)
        except GuardCallError as exc:
            self._unavailable(str(exc))
        # Relative to the new text; one found in the context only is not acted on again.
        return Reading(Verdict(ALLOW), spans=[e.shifted(-start) for e in found if e.end > start])

    async def settle(self, piece: str, found: list[Span]) -> str:
        guard = self.guard
        entities = [e for e in found if isinstance(e, Entity)]
        if guard.reject:
            verdict = rejected(guard.spec.rejection, matched=kinds(entities))
            merge(self.verdict, verdict)
            raise StreamRejected(verdict)
        try:
            out, applied = await guard.api.anonymize(piece, entities, self.deadline)
        except GuardCallError as exc:
            self._unavailable(str(exc))
        merge(self.verdict, Verdict(MASK, matched=applied))
        return out

    def _unavailable(self, why: str) -> NoReturn:
        """Presidio failed on the held text: the fallback or the failure mode has the rest."""
        guard = self.guard
        if guard.fallback is not None:
            guard.log_fallback("response", why)
            self.verdict.fallback, self.verdict.reason = "regex", why
            raise StandIn(RegexFilter(guard.fallback), fallback="regex")
        verdict = guard.failed(why)
        merge(self.verdict, verdict)
        if verdict.action != FAIL_OPEN:
            raise StreamRejected(verdict)
        raise StandIn(PassThrough())  # failOpen: the rest of the text goes as it comes
