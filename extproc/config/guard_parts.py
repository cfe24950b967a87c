"""The pieces guard configs share: a rejection answer, a regex rule, a service address.

Kept apart from extproc/config/guardrails.py so a guard kind's own config module (presidio.py)
can use them without importing the promptGuard shapes that list every kind.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from extproc.config.base import Strict

DEFAULT_BODY = "The request was rejected due to inappropriate content"


def lower_word(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


class HeaderModifier(Strict):
    """Headers of a rejection answer: ``set``/``add`` as a map or a list of {name, value}."""

    add: dict[str, str] = {}
    set: dict[str, str] = {}
    remove: list[str] = []

    @field_validator("add", "set", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {str(p.get("name")): str(p.get("value", "")) for p in v if isinstance(p, dict)}
        return v


class Rejection(Strict):
    body: str = DEFAULT_BODY
    status: int = Field(403, ge=400, le=599)
    headers: HeaderModifier | None = None


class RegexRule(Strict):
    builtin: str | None = None
    pattern: str | None = None
    name: str | None = None
    # This project's extension: the text a match becomes (default ``<NAME>``).
    replacement: str | None = None

    @model_validator(mode="after")
    def _one(self) -> RegexRule:
        from extproc.guardrails import patterns

        if (self.builtin is None) == (self.pattern is None):
            raise ValueError("a rule is either {builtin: name} or {pattern: regex, name: NAME}")
        if self.builtin is not None:
            patterns.builtin(self.builtin)
        else:
            assert self.pattern is not None
            patterns.check_pattern(self.pattern)
        return self


class Target(Strict):
    host: str

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.match(r"^(https?://)?[A-Za-z0-9.\-\[\]:]+(/.*)?$", v):
            raise ValueError(f"{v!r}: use host:port (or an http:// or https:// URL)")
        return v
