"""Every remote guard's view of a streamed answer: overlapping windows of text, each checked whole.

A remote guard (webhook, googleModelArmor, presidio, bedrockGuardrails) sends text to a service,
which cannot look at text that has not arrived yet, so the regex window (masker.py) does not
apply. Instead the answer is sent in windows of about ``streamBatch`` characters
(extproc/config/stream_window.py); the last ``streamOverlap`` characters or more of each window
are not let go but sent again at the start of the next one. So every character let go was checked
followed by at least ``streamOverlap`` characters (or by the end of the answer), and a finding up to
``streamOverlap`` characters long that falls across two windows is whole in one of them.

What of a window is let go depends on what the guard says about it (its ``Reading``):

- nothing found (or ``failOpen``): the window up to ``streamOverlap`` before its end, cut after a
  space when one is near;
- a block (a reject, ``failClosed``): the stream ends (``StreamRejected``), none of the window goes;
- the window rewritten, with no positions (webhook, Model Armor, Bedrock: the service answers the
  masked text): ``masked_prefix`` below. Never a finding's original text, nor a finding that more
  text could still extend;
- findings with positions (Presidio's analyzer): the cut moves back to the start of any finding it
  would split, and the piece let go is masked (or rejected) by the guard with the findings inside
  it (``settle``). Such readers are also shown the last ``streamOverlap`` characters already let
  go, as context (word boundaries, context words); findings there are not acted on again.

A guard whose service fails mid-stream may hand the held text and the rest of the stream to a
stand-in filter (``StandIn``: Presidio's regex fallback, or a pass-through for failOpen).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from extproc.config.stream_window import DEFAULT_BATCH, StreamWindowFields
from extproc.guardrails.base import MASK, StreamFilter, StreamRejected, TextItem, Verdict, merge

if TYPE_CHECKING:
    from extproc.guardrails.base import Guard
    from extproc.pipeline.exchange import Exchange


class Span(Protocol):
    """A finding's place in a text (Presidio's ``Entity``)."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


@dataclass
class Reading:
    """What a guard says about one window."""

    verdict: Verdict
    masked: str | None = None  # the window as the service rewrote it (None: unchanged)
    spans: list[Span] | None = None  # where its findings are, relative to the window's new text


class StandIn(Exception):
    """The guard's service failed: ``instead`` checks the held text and the rest of the stream."""

    def __init__(self, instead: StreamFilter, fallback: str | None = None) -> None:
        super().__init__("stand-in")
        self.instead, self.fallback = instead, fallback


class OverlapWindow(StreamFilter):
    """One streamed text through a remote guard, in overlapping windows (the module's docstring).

    ``read`` (and, for readers that give positions, ``settle``) is how the guard is asked; the
    default sends the window to the guard's ``check`` as an answer's text.
    """

    context = False  # readers with positions set it: the text let go before a window goes with it

    def __init__(
        self, guard: Guard, ex: Exchange, batch: int, overlap: int, max_hold: int | None = None
    ) -> None:
        super().__init__()
        if not 0 <= overlap < batch:
            raise ValueError(f"the overlap ({overlap}) must be less than the batch ({batch})")
        self.guard, self.ex, self.batch, self.overlap = guard, ex, batch, overlap
        # Findings closer together than ``overlap`` hold the text back; past this much it goes.
        self.max_hold = max(max_hold or 8 * batch, 2 * batch)
        self.pending = ""  # not let go yet
        self.before = ""  # the last ``overlap`` characters let go (context readers)
        self.instead: StreamFilter | None = None
        self.fallback: str | None = None

    @classmethod
    def of(cls, guard: Guard, ex: Exchange) -> OverlapWindow:
        """The window the guard's config asks for (``streamBatch``, ``streamOverlap``)."""
        config = guard.spec.config
        if isinstance(config, StreamWindowFields):
            return cls(guard, ex, config.stream_batch, config.overlap, guard.max_hold)
        return cls(guard, ex, DEFAULT_BATCH, DEFAULT_BATCH // 4, guard.max_hold)

    # --- how the guard is asked ------------------------------------------------------------------

    async def read(self, text: str, start: int) -> Reading:
        """The guard's reading of ``text`` (its first ``start`` characters are context, already let go)."""
        verdict = await self.guard.check("response", [TextItem("assistant", "messages", text)], self.ex)
        masked = verdict.texts[0] if verdict.action == MASK and verdict.texts else None
        return Reading(verdict, masked if masked != text else None)

    async def settle(self, piece: str, found: list[Span]) -> str:
        """What ``piece`` goes as, with the findings ``found`` in it (readers with positions)."""
        raise NotImplementedError

    # --- the stream ------------------------------------------------------------------------------

    async def feed(self, text: str) -> str:
        if self.instead is not None:
            return await self._stand_in(self.instead.feed(text))
        self.pending += text
        if len(self.pending) < self.batch:
            return ""
        return await self._window(final=False)

    async def flush(self) -> str:
        out = await self._window(final=True) if self.instead is None and self.pending else ""
        if self.instead is not None:
            out += await self._stand_in(self.instead.flush())
            merge(self.verdict, self.instead.verdict)
        return out

    async def _stand_in(self, pending: Awaitable[str]) -> str:
        try:
            return await pending
        except StreamRejected as rej:  # the stand-in's reject, recorded as its (fallback: regex)
            rej.verdict.fallback = rej.verdict.fallback or self.fallback
            merge(self.verdict, rej.verdict)
            raise

    async def _window(self, final: bool) -> str:
        try:
            return await self._let_go(final)
        except StandIn as stand_in:
            self.instead, self.fallback = stand_in.instead, stand_in.fallback
            held, self.pending = self.pending, ""
            return await self._stand_in(self.instead.feed(held))

    async def _let_go(self, final: bool) -> str:
        pending, before = self.pending, self.before if self.context else ""
        reading = await self.read(before + pending, len(before))
        merge(self.verdict, reading.verdict)
        if reading.verdict.blocks:
            raise StreamRejected(reading.verdict)
        want = len(pending) if final else cut_at(pending, len(pending) - self.overlap)
        if reading.spans is not None:
            cut = want if final else cut_point(reading.spans, want)
            if cut <= 0 and len(pending) >= self.max_hold:
                cut = cut_point(reading.spans, want, forward=True)  # findings chained all the way
            inside = [s for s in reading.spans if s.end <= cut]
            out = await self.settle(pending[:cut], inside) if inside and cut > 0 else pending[:cut]
        elif reading.masked is not None:
            if final:
                cut, out = len(pending), reading.masked
            else:
                cut, out = masked_prefix(pending, reading.masked, want, self.overlap, self.max_hold)
        else:
            cut, out = want, pending[:want]
        if self.context:
            self.before = (self.before + pending[:cut])[-self.overlap :] if self.overlap else ""
        self.pending = pending[cut:]
        return out


def cut_at(text: str, upto: int) -> int:
    """Where to let ``text`` go up to: after its last space in ``text[upto // 2 : upto]``, else ``upto``."""
    if upto <= 0:
        return 0
    for i in range(upto - 1, upto // 2 - 1, -1):
        if text[i].isspace():
            return i + 1
    return upto


def cut_point(found: list[Span], want: int, forward: bool = False) -> int:
    """The last position at or before ``want`` that splits no finding (``forward``: the first at or after)."""
    cut, moved = want, True
    while moved:
        moved = False
        for f in found:
            if f.start < cut < f.end:
                cut, moved = (f.end if forward else f.start), True
    return cut


def masked_prefix(window: str, masked: str, want: int, overlap: int, max_hold: int) -> tuple[int, str]:
    """``(cut, text)``: how much of a rewritten ``window`` goes (``window[:cut]``), and as what.

    The service rewrote findings in place and left the text around them, so the window and its
    masked text share a prefix (before the first rewrite) and a suffix (after the last one).

    - Once at least ``overlap`` unchanged characters follow the last rewrite, the masked text goes
      through it (and the unchanged text after it, up to ``want``): the service saw what follows
      each finding, so none of them can still grow.
    - Otherwise the last finding may be cut short by the window's end, and only the unchanged
      text at least ``overlap`` characters before the first rewrite goes as it is: a finding
      that the service kept the start of (``(555) ***-****``) begins at most ``overlap`` before
      its first changed character, so it is whole in the next window.
    - Findings closer together than ``overlap`` all the way: held until the window is ``max_hold``
      long, then the masked text goes through the last rewrite (the end of a finding that the
      window cut short may then follow unmasked: the one case the overlap cannot cover).
    """
    limit = min(len(window), len(masked))
    head = 0
    while head < limit and window[head] == masked[head]:
        head += 1
    if head == len(window) == len(masked):
        return want, window[:want]
    tail = 0
    while tail < limit - head and window[-1 - tail] == masked[-1 - tail]:
        tail += 1
    end = len(window) - tail  # where the rewrites end in the window
    if tail >= overlap or len(window) >= max_hold:
        cut = max(want, end)
        return cut, masked[: len(masked) - tail] + window[end:cut]
    cut = cut_at(window, min(want, head - overlap))
    return cut, window[:cut]
