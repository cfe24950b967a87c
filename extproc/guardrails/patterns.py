"""The regex guard's rules: the builtins (agentgateway's names and mask tokens) and custom patterns.

A rule matches at a position when its regex does and its check passes (the card families and
Canadian SINs are Luhn-checked, so an order number is not a card); its mask token is
``<ENTITY>`` (agentgateway's entity names for builtins, the rule's ``name`` for a custom
pattern) unless the config sets ``replacement``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


def luhn(digits: str) -> bool:
    total, odd = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if odd:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        odd = not odd
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn(digits)


def _ssn(text: str) -> bool:
    digits = _digits(text)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _sin(text: str) -> bool:
    digits = _digits(text)
    return luhn(digits)


@dataclass(frozen=True)
class Builtin:
    name: str  # as agentgateway spells it in config
    entity: str  # the mask token's name
    pattern: str
    check: Callable[[str], bool] | None = None
    # Every match has a character of ``anchor`` at most ``lead`` characters after its start: the
    # scan jumps from one anchor to the next instead of trying every position (several times faster).
    anchor: str = ""
    lead: int = 0


_SEP = r"[- ]?"
BUILTINS: dict[str, Builtin] = {
    b.name.lower(): b
    for b in (
        Builtin("ssn", "SSN", r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b", _ssn, "[0-9]"),
        # The seed's families: Visa 4, Mastercard 51-55, Amex 3, Discover 6, Diners Club 1.
        Builtin(
            "creditCard",
            "CREDIT_CARD",
            rf"\b(?:4\d{{3}}|5[1-5]\d{{2}}|3\d{{3}}|6\d{{3}}|1\d{{3}}){_SEP}\d{{3,4}}{_SEP}\d{{3,4}}{_SEP}\d{{3,5}}\b",
            _card,
            "[0-9]",
        ),
        # North American numbers (10 digits, optional +1, optional parentheses) and international
        # ones written with a leading +.
        Builtin(
            "phoneNumber",
            "PHONE_NUMBER",
            r"(?<![\w+])(?:\+1[-. ]?)?(?:\(\d{3}\)|\d{3})[-. ]?\d{3}[-. ]?\d{4}(?!\w)"
            r"|(?<![\w+])\+[2-9]\d{0,2}(?:[-. ]?\d{2,4}){2,4}(?!\w)",
            anchor="[0-9+(]",
        ),
        Builtin(
            "email",
            "EMAIL_ADDRESS",
            r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
            r"[A-Za-z]{2,24}(?![\w-])",
            anchor="@",
            lead=64,
        ),
        # Canadian Social Insurance Numbers: nine digits, Luhn-valid, grouped 3-3-3 or not.
        Builtin("caSin", "CA_SIN", r"\b\d{3}[- ]\d{3}[- ]\d{3}\b|\b\d{9}\b", _sin, "[0-9]"),
    )
}


def builtin(name: str) -> Builtin:
    """The builtin for a config name, matched case-insensitively (the seed writes ``Email``)."""
    found = BUILTINS.get(name.replace("_", "").replace("-", "").lower())
    if found is None:
        known = ", ".join(b.name for b in BUILTINS.values())
        raise ValueError(f"unknown builtin {name!r}: use one of {known}")
    return found


@dataclass(frozen=True)
class Rule:
    """One compiled rule: what it is called in decisions and what replaces its matches."""

    label: str
    regex: re.Pattern[str]
    token: str
    check: Callable[[str], bool] | None = None
    anchor: re.Pattern[str] | None = None
    lead: int = 0

    @property
    def source(self) -> str:
        return self.regex.pattern

    def next_match(self, text: str, pos: int) -> re.Match[str] | None:
        """The first match at or after ``pos`` that passes the rule's check.

        A rule matches at a position when its regex matches there (``regex.match``) and the check
        passes; with an anchor, only the positions up to ``lead`` before each anchor are tried."""
        if self.anchor is not None:
            return self._anchored(text, pos, self.anchor)
        search = self.regex.search
        while True:
            m = search(text, pos)
            if m is None or self.check is None or self.check(m.group()):
                return m
            pos = m.start() + 1

    def _anchored(self, text: str, pos: int, anchor: re.Pattern[str]) -> re.Match[str] | None:
        match, check, tried = self.regex.match, self.check, pos
        while (a := anchor.search(text, pos)) is not None:
            at = a.start()
            for start in range(max(tried, at - self.lead), at + 1):
                m = match(text, start)
                if m is not None and (check is None or check(m.group())):
                    return m
            tried = pos = at + 1
        return None


def compile_builtin(name: str, replacement: str | None = None) -> Rule:
    b = builtin(name)
    anchor = re.compile(b.anchor) if b.anchor else None
    return Rule(b.name, re.compile(b.pattern), replacement or f"<{b.entity}>", b.check, anchor, b.lead)


def compile_pattern(pattern: str, name: str | None = None, replacement: str | None = None) -> Rule:
    regex = check_pattern(pattern)
    token = replacement or (f"<{name}>" if name else "<masked>")
    return Rule(name or pattern, regex, token)


def check_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern; ValueError (for the config's message) if it cannot be a rule."""
    from extproc.guardrails.prefix import min_width

    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if min_width(pattern) == 0:
        raise ValueError(f"pattern {pattern!r} can match the empty string, which masks nothing")
    return regex
