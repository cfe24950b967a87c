"""A remote guard's view of a streamed answer: overlapping windows of text, each checked whole.

A remote guard (Model Armor; any guard whose ``check`` classifies or de-identifies a text it is
sent) cannot say where in a text a finding starts, so the regex window (masker.py) does not
apply. Instead the text is sent in windows that overlap: a phrase or an address up to
``overlap`` characters long that falls across two windows is whole in one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from extproc.guardrails.base import MASK, Guard, StreamFilter, StreamRejected, TextItem, merge

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange


class OverlapWindow(StreamFilter):
    """A streamed answer checked in overlapping windows, so a phrase or an address that falls across
    two calls is still seen whole by one of them.

    Text waits until ``batch`` characters are pending; the whole pending text is checked, and all
    but its last ``overlap`` characters or more (cut after a space) is let go; the rest is checked
    again with what follows. Every character let go was checked followed by at least ``overlap``
    characters (or by the end of the answer). A de-identified window goes as ``masked_prefix`` says:
    never a finding's original text, nor a finding that more text could still extend.
    """

    def __init__(
        self, guard: Guard, ex: Exchange, batch: int, overlap: int, max_hold: int | None = None
    ) -> None:
        super().__init__()
        self.guard, self.ex, self.batch, self.overlap = guard, ex, batch, overlap
        # Findings closer together than ``overlap`` hold the text back; past this much it goes.
        self.max_hold = max_hold or 8 * batch
        self.pending = ""

    async def feed(self, text: str) -> str:
        self.pending += text
        if len(self.pending) < self.batch:
            return ""
        return await self._check(cut_at(self.pending, len(self.pending) - self.overlap))

    async def flush(self) -> str:
        return await self._check(len(self.pending)) if self.pending else ""

    async def _check(self, cut: int) -> str:
        window = self.pending
        verdict = await self.guard.check("response", [TextItem("assistant", "messages", window)], self.ex)
        merge(self.verdict, verdict)
        if verdict.blocks:
            raise StreamRejected(verdict)
        if verdict.action == MASK and verdict.texts and verdict.texts[0] is not None:
            if cut == len(window):  # the end of the answer: all of it goes
                cut, out = cut, verdict.texts[0]
            else:
                cut, out = masked_prefix(window, verdict.texts[0], cut, self.overlap, self.max_hold)
        else:
            out = window[:cut]
        self.pending = window[cut:]
        return out


def cut_at(text: str, upto: int) -> int:
    """Where to let ``text`` go up to: after its last space in ``text[upto // 2 : upto]``, else ``upto``."""
    for i in range(upto - 1, upto // 2 - 1, -1):
        if text[i].isspace():
            return i + 1
    return upto


def masked_prefix(window: str, masked: str, cut: int, overlap: int, max_hold: int) -> tuple[int, str]:
    """``(cut, text)``: how much of a de-identified ``window`` goes, and the text it goes as.

    De-identification rewrites findings in place and leaves the text around them, so the window and
    its masked text share a prefix (the text before the first finding) and a suffix (after the last).
    Text before the first finding goes as is (up to ``cut``, or the last space before the finding);
    a window that starts with a finding goes masked up to its last finding, once at least
    ``overlap`` characters follow that finding (one closer to the end may be cut short, as
    ``bo@example.co`` of ``bo@example.com``), or when ``max_hold`` characters are waiting (findings
    closer together than ``overlap`` all the way: then the end of a finding cut short may follow
    raw).
    """
    limit = min(len(window), len(masked))
    head = 0
    while head < limit and window[head] == masked[head]:
        head += 1
    if cut <= head:
        return cut, window[:cut]
    if head > 0:
        cut = cut_at(window, head)
        return cut, window[:cut]
    tail = 0
    while tail < limit - head and window[-1 - tail] == masked[-1 - tail]:
        tail += 1
    if tail >= overlap or len(window) >= max_hold:
        return len(window) - tail, masked[: len(masked) - tail]
    return 0, ""
