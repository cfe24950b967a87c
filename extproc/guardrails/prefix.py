"""Where a streamed text stops being final for a regex: the regex of its matches' prefixes.

A streamed answer is masked in a sliding window. Text may leave the window once no match can
start in it whatever text comes next; everything after the first position that still could be
the start of a match is held back. For a pattern R, position t can still change its outcome
exactly when the text from t to the end of what has arrived is a prefix of some match of R (a
match that reaches further than the text so far, or whose end assertion, ``\\b`` or ``$``, needs
the next character). ``prefix_source(R)`` builds a regex for that prefix language from R's
parse tree, so ``(?:prefix)\\Z`` searched from the window's start finds the first position to
hold. It is a superset where exactness would be costly (lookaheads count as text to wait for),
which only holds back more.

Patterns with constructs the prefix language cannot be built for (backreferences, atomic
groups, possessive repeats, conditionals) fall back to a fixed window: the pattern's maximum
width plus one character, capped.
"""

from __future__ import annotations

import re
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as P  # type: ignore[attr-defined]
from typing import Any

_AT = {
    C.AT_BEGINNING: "^",
    C.AT_BEGINNING_STRING: r"\A",
    C.AT_END: "$",
    C.AT_END_STRING: r"\Z",
    C.AT_BOUNDARY: r"\b",
    C.AT_NON_BOUNDARY: r"\B",
}
_CATEGORY = {
    C.CATEGORY_DIGIT: r"\d",
    C.CATEGORY_NOT_DIGIT: r"\D",
    C.CATEGORY_SPACE: r"\s",
    C.CATEGORY_NOT_SPACE: r"\S",
    C.CATEGORY_WORD: r"\w",
    C.CATEGORY_NOT_WORD: r"\W",
}
_FLAG_LETTERS = ((C.SRE_FLAG_IGNORECASE, "i"), (C.SRE_FLAG_MULTILINE, "m"), (C.SRE_FLAG_DOTALL, "s"))
EMPTY = "(?:)"


class Unsupported(Exception):
    """The pattern uses a construct whose prefix language is not built here."""


def _char(code: int) -> str:
    return f"\\U{code:08x}"


def _flags(flags: int) -> str:
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)


def _class(items: list[tuple[Any, Any]]) -> str:
    out = []
    for op, av in items:
        if op is C.NEGATE:
            out.append("^")
        elif op is C.LITERAL:
            out.append(_char(av))
        elif op is C.RANGE:
            out.append(f"{_char(av[0])}-{_char(av[1])}")
        elif op is C.CATEGORY and av in _CATEGORY:
            out.append(_CATEGORY[av])
        else:
            raise Unsupported(f"character class item {op}")
    return "[" + "".join(out) + "]"


def _full(items: Any) -> str:
    return "".join(_node(op, av) for op, av in items)


def _node(op: Any, av: Any) -> str:
    """The node itself, as regex source (groups become non-capturing)."""
    if op is C.LITERAL:
        return _char(av)
    if op is C.NOT_LITERAL:
        return f"[^{_char(av)}]"
    if op is C.ANY:
        return "."
    if op is C.IN:
        return _class(av)
    if op is C.BRANCH:
        return "(?:" + "|".join(_full(b) for b in av[1]) + ")"
    if op is C.SUBPATTERN:
        _, add, remove, inner = av
        head = _flags(add) + (("-" + _flags(remove)) if _flags(remove) else "")
        return f"(?{head}:{_full(inner)})"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, inner = av
        upper = "" if hi is C.MAXREPEAT else str(hi)
        return f"(?:{_full(inner)}){{{lo},{upper}}}" + ("?" if op is C.MIN_REPEAT else "")
    if op is C.AT and av in _AT:
        return _AT[av]
    if op in (C.ASSERT, C.ASSERT_NOT):
        direction, inner = av
        kind = ("=" if op is C.ASSERT else "!") if direction == 1 else ("<=" if op is C.ASSERT else "<!")
        return f"(?{kind}{_full(inner)})"
    raise Unsupported(str(op))


def _prefix_seq(items: list[tuple[Any, Any]]) -> str:
    """Prefixes of a concatenation: a prefix of the first node, or it whole and a prefix of the rest.

    Built right to left so the source grows linearly with the pattern."""
    out = EMPTY
    for op, av in reversed(items):
        head = _prefix(op, av)
        if out == EMPTY:
            out = head
        elif head == EMPTY:  # zero-width: nothing of its own to wait for
            out = f"(?:{_node(op, av)}{out})"
        else:
            out = f"(?:{head}|{_node(op, av)}{out})"
    return out


def _prefix(op: Any, av: Any) -> str:
    if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
        return f"(?:{_node(op, av)})?"
    if op is C.BRANCH:
        return "(?:" + "|".join(_prefix_seq(list(b)) for b in av[1]) + ")"
    if op is C.SUBPATTERN:
        _, add, remove, inner = av
        head = _flags(add) + (("-" + _flags(remove)) if _flags(remove) else "")
        return f"(?{head}:{_prefix_seq(list(inner))})"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        _, hi, inner = av
        if hi == 0:
            return EMPTY
        upper = "" if hi is C.MAXREPEAT else str(hi - 1)
        return f"(?:(?:{_full(inner)}){{0,{upper}}}{_prefix_seq(list(inner))})"
    if op is C.AT:
        if av not in _AT:
            raise Unsupported(str(av))
        # ``$`` also matches before a last newline, which more text would move.
        return r"(?:\n)?" if av == C.AT_END else EMPTY
    if op in (C.ASSERT, C.ASSERT_NOT):
        direction, inner = av
        # Lookbehind reads text already final; a lookahead may need text still to come.
        return EMPTY if direction == -1 else _prefix_seq(list(inner))
    raise Unsupported(str(op))


def global_flags(pattern: str) -> int:
    return int(P.parse(pattern).state.flags)


def prefix_source(pattern: str) -> str:
    """Regex source matching every prefix of every match of ``pattern`` (scoped flags inside).

    Raises Unsupported for constructs it does not handle."""
    parsed = P.parse(pattern)
    body = _prefix_seq(list(parsed))
    flags = _flags(parsed.state.flags)
    return f"(?{flags}:{body})" if flags else f"(?:{body})"


def max_width(pattern: str) -> int:
    return int(P.parse(pattern).getwidth()[1])


def min_width(pattern: str) -> int:
    return int(P.parse(pattern).getwidth()[0])


def lookbehind(pattern: str) -> int:
    """Characters before a match the pattern may read: lookbehinds, and one for ``\\b`` and ``^``."""
    most = 1

    def walk(items: Any) -> None:
        nonlocal most
        for op, av in items:
            if op in (C.ASSERT, C.ASSERT_NOT) and av[0] == -1:
                most = max(most, int(av[1].getwidth()[1]) + 1)
            elif op is C.BRANCH:
                for b in av[1]:
                    walk(b)
            elif op in (C.SUBPATTERN,):
                walk(av[3])
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
                walk(av[2])
            elif op in (C.ASSERT, C.ASSERT_NOT, C.ATOMIC_GROUP):
                walk(av[1] if op is not C.ATOMIC_GROUP else av)

    walk(list(P.parse(pattern)))
    return most


def hold_source(pattern: str, cap: int) -> str:
    """What to search for, anchored at the end, to find where the held-back text starts."""
    try:
        return prefix_source(pattern)
    except Unsupported:
        width = min(max_width(pattern), cap)
        return f"(?s:.{{0,{width + 1}}})"


def compile_hold(patterns: list[str], cap: int) -> re.Pattern[str]:
    return re.compile("(?:" + "|".join(hold_source(p, cap) for p in patterns) + r")\Z")
