"""Finding and masking rule matches, in a whole text or in a text that arrives in pieces.

The matches of a set of rules are defined once, for both: scanning left to right, the next
match is the one that starts first (the earlier rule on a tie), and scanning goes on after its
end. ``scan`` gives them for a whole text; ``Window`` gives the same ones for a streamed text,
letting text go as soon as no match can start in it (extproc/guardrails/prefix.py), so
``"".join(window.feed(p) for p in pieces) + window.flush() == mask(text)`` for any split.

The one exception is the hold limit: a region that stays undecided for longer than
``max_hold`` characters (a custom ``password.*`` with no line end) is let go at the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from extproc.guardrails.patterns import Rule
from extproc.guardrails.prefix import compile_hold, lookbehind

DEFAULT_MAX_HOLD = 4096


@dataclass(frozen=True)
class Found:
    start: int
    end: int
    rule: Rule


class Matcher:
    """A rule set, compiled once per guard and shared by its requests."""

    def __init__(self, rules: list[Rule], max_hold: int = DEFAULT_MAX_HOLD) -> None:
        self.rules = rules
        self.max_hold = max_hold
        self.hold = compile_hold([r.source for r in rules], max_hold)
        self.context = max((lookbehind(r.source) for r in rules), default=1)

    def next_found(self, text: str, pos: int, cache: dict[int, re.Match[str] | None]) -> Found | None:
        """The next match at or after ``pos`` (``cache``: each rule's next match, reused while ahead)."""
        best: Found | None = None
        for i, rule in enumerate(self.rules):
            m = cache.get(i, False)
            if m is False or (m is not None and m.start() < pos):  # type: ignore[comparison-overlap]
                m = cache[i] = rule.next_match(text, pos)
            if m is not None and (best is None or m.start() < best.start):
                best = Found(m.start(), m.end(), rule)
        return best

    def scan(self, text: str) -> list[Found]:
        out: list[Found] = []
        cache: dict[int, re.Match[str] | None] = {}
        pos = 0
        while (found := self.next_found(text, pos, cache)) is not None:
            out.append(found)
            pos = found.end
        return out

    def mask(self, text: str) -> tuple[str, list[Found]]:
        found = self.scan(text)
        return splice(text, 0, len(text), found), found

    def window(self) -> Window:
        return Window(self)


def splice(text: str, start: int, end: int, found: list[Found]) -> str:
    """``text[start:end]`` with each match replaced by its rule's token."""
    if not found:
        return text[start:end]
    parts, at = [], start
    for f in found:
        parts.append(text[at : f.start])
        parts.append(f.rule.token)
        at = f.end
    parts.append(text[at:end])
    return "".join(parts)


@dataclass
class Window:
    """One streamed text's sliding window. ``feed`` returns the masked text that may go now."""

    matcher: Matcher
    buf: str = ""  # the last ``context`` characters already let go, then the held text
    pos: int = 0  # where the held text starts in ``buf``
    hits: list[Rule] = field(default_factory=list)  # the rule of every match so far

    def feed(self, text: str) -> str:
        if not text:
            return ""
        self.buf += text
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True)

    @property
    def held(self) -> int:
        return len(self.buf) - self.pos

    def _release(self, final: bool) -> str:
        m, buf = self.matcher, self.buf
        pos, end = self.pos, len(buf)
        found: list[Found] = []
        cache: dict[int, re.Match[str] | None] = {}
        while True:
            limit = end if final else self._stable_until(buf, pos)
            nxt = m.next_found(buf, pos, cache)
            if nxt is not None and nxt.start < limit:
                found.append(nxt)
                pos = nxt.end
                continue
            out = splice(buf, self.pos, max(pos, limit), found)
            pos = max(pos, limit)
            break
        self.hits += [f.rule for f in found]
        keep = max(0, pos - m.context)  # text a lookbehind or \b at the next position reads
        self.buf, self.pos = buf[keep:], pos - keep
        return out

    def _stable_until(self, buf: str, pos: int) -> int:
        """The first position from which a match could still start once more text comes."""
        hit = self.matcher.hold.search(buf, pos)
        start = hit.start() if hit is not None else len(buf)
        return max(start, len(buf) - self.matcher.max_hold)
