"""A streamed answer's text through a Presidio guard: analyzed in overlapping pieces.

The text is held until ``streamBatch + streamOverlap`` characters wait, then analyzed together
with the last ``streamOverlap`` characters already let go (context: word boundaries, Presidio's
context words). All of it goes except the last ``streamOverlap`` characters, and never through
the middle of a finding: the cut moves back to the start of any entity it would split. So an
entity of up to ``streamOverlap`` characters cut between two deltas, or two pieces, is always
analyzed whole, and the text let go is masked by the anonymizer (or rejected) exactly as the
analyzer found it. The rest waits for more text; the end of the text lets everything go.

Presidio unreachable mid-stream: the guard's regex fallback takes over the rest of this text
(through its own exact window), or failOpen lets it go unchecked, or failClosed ends the stream.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from extproc.guardrails.base import FAIL_OPEN, MASK, StreamFilter, StreamRejected, Verdict, merge, rejected
from extproc.guardrails.http import GuardCallError
from extproc.guardrails.presidio_api import Entity, kinds
from extproc.guardrails.regex_guard import RegexFilter
from extproc.guardrails.stream import PassThrough

if TYPE_CHECKING:
    from extproc.guardrails.presidio import PresidioGuard
    from extproc.pipeline.exchange import Exchange


def cut_point(found: list[Entity], want: int) -> int:
    """The last position at or before ``want`` that splits no entity."""
    cut, moved = want, True
    while moved:
        moved = False
        for e in found:
            if e.start < cut < e.end:
                cut, moved = e.start, True
    return cut


class PresidioFilter(StreamFilter):
    def __init__(self, guard: PresidioGuard, ex: Exchange) -> None:
        super().__init__()
        self.guard = guard
        self.batch = guard.config.stream_batch
        self.overlap = guard.config.stream_overlap
        self.context = ""  # the last ``overlap`` characters let go
        self.pending = ""  # text not let go yet
        self.instead: StreamFilter | None = None  # the fallback (or failOpen) once Presidio failed

    async def feed(self, text: str) -> str:
        if self.instead is not None:
            return await self._instead(self.instead.feed(text))
        self.pending += text
        if len(self.pending) < self.batch + self.overlap:
            return ""
        return await self._release(final=False)

    async def flush(self) -> str:
        out = await self._release(final=True) if self.instead is None and self.pending else ""
        if self.instead is not None:
            out += await self._instead(self.instead.flush())
            merge(self.verdict, self.instead.verdict)
        return out

    async def _instead(self, pending: Awaitable[str]) -> str:
        try:
            return await pending
        except StreamRejected as rej:
            rej.verdict.fallback = "regex"
            merge(self.verdict, rej.verdict)
            raise

    async def _release(self, final: bool) -> str:
        guard, pending = self.guard, self.pending
        deadline = guard.deadline()
        start = len(self.context)
        try:
            found = await guard.api.analyze(self.context + pending, deadline)
        except GuardCallError as exc:
            return await self._failed(str(exc))
        found = [e.shifted(-start) for e in found if e.end > start]
        cut = len(pending) if final else cut_point(found, len(pending) - self.overlap)
        if cut <= 0:
            return ""
        inside = [e for e in found if e.end <= cut]
        released = pending[:cut]
        out = released
        if inside:
            if guard.reject:
                verdict = rejected(guard.spec.rejection, matched=kinds(inside))
                merge(self.verdict, verdict)
                raise StreamRejected(verdict)
            try:
                out, applied = await guard.api.anonymize(released, inside, deadline)
            except GuardCallError as exc:
                return await self._failed(str(exc))
            merge(self.verdict, Verdict(MASK, matched=applied))
        self.context = (self.context + released)[-self.overlap :] if self.overlap else ""
        self.pending = pending[cut:]
        return out

    async def _failed(self, why: str) -> str:
        """Presidio failed on the held text: the fallback or the failure mode has the rest."""
        guard = self.guard
        held, self.pending = self.pending, ""
        if guard.fallback is not None:
            guard.log_fallback("response", why)
            self.verdict.fallback, self.verdict.reason = "regex", why
            self.instead = RegexFilter(guard.fallback)
            return await self._instead(self.instead.feed(held))
        verdict = guard.failed(why)
        merge(self.verdict, verdict)
        if verdict.action != FAIL_OPEN:
            raise StreamRejected(verdict)
        self.instead = PassThrough()  # failOpen: the rest of the text goes as it comes
        return held
