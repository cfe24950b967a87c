"""``presidio``: Microsoft Presidio's analyzer and anonymizer as a guard (this project's extension)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from extproc.config.base import CheckedDuration, Strict
from extproc.config.guard_parts import RegexRule, Target, lower_word
from extproc.config.stream_window import StreamWindowFields

_OPERATORS = frozenset({"replace", "redact", "mask", "hash", "encrypt", "keep"})
# Presidio's entity -> the regex builtin that stands in for it when Presidio cannot be reached.
PRESIDIO_BUILTINS = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phoneNumber",
    "CREDIT_CARD": "creditCard",
    "US_SSN": "ssn",
}


class RegexFallback(Strict):
    """The regex rules a Presidio guard uses while Presidio is unreachable (its action: the guard's)."""

    rules: list[RegexRule] = Field(min_length=1)
    replacement: str | None = None


class PresidioFallback(Strict):
    regex: RegexFallback


class Presidio(StreamWindowFields):
    """Microsoft Presidio's analyzer and anonymizer services (this project's extension).

    ``fallback: regex`` stands the regex builtins in for the configured entities that have one
    (email, phone, card, SSN), each masked as Presidio would (its ``anonymizers`` replace value, or
    ``<ENTITY>``); ``fallback: {regex: {rules: [...]}}`` names the rules.
    """

    analyzer_url: str = Field(alias="analyzerUrl")
    anonymizer_url: str | None = Field(None, alias="anonymizerUrl")  # needed to mask
    language: str = "en"
    entities: list[str] = []  # none: every entity the analyzer recognizes
    score_threshold: float | None = Field(None, alias="scoreThreshold", ge=0, le=1)
    # The anonymizer's operators by entity (or DEFAULT), sent as they are: {type: replace, new_value}.
    anonymizers: dict[str, dict[str, Any]] = {}
    action: Literal["mask", "reject"] = "mask"
    fallback: Literal["regex"] | PresidioFallback | None = None
    failure_mode: Literal["failClosed", "failOpen"] = Field("failClosed", alias="failureMode")
    timeout: CheckedDuration | None = None  # for both calls of one check, as a webhook's
    # streamBatch, streamOverlap: a streamed answer in overlapping windows (stream_window.py).

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: Any) -> Any:
        return lower_word(v)

    @field_validator("analyzer_url", "anonymizer_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            Target(host=v)
        return v

    @field_validator("anonymizers")
    @classmethod
    def _operators(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for entity, operator in v.items():
            kind = operator.get("type")
            if kind not in _OPERATORS:
                known = ", ".join(sorted(_OPERATORS))
                raise ValueError(f"anonymizers.{entity}: type {kind!r} is not one of {known}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Presidio:
        if self.action == "mask" and self.anonymizer_url is None:
            raise ValueError("action mask needs anonymizerUrl (the anonymizer writes the masked text)")
        if self.fallback == "regex" and not self.fallback_builtins():
            raise ValueError(
                f"fallback: regex has no builtin for {', '.join(self.entities)}: "
                f"list rules ({{regex: {{rules: [...]}}}}) or use entities {', '.join(PRESIDIO_BUILTINS)}"
            )
        return self

    def fallback_builtins(self) -> list[tuple[str, str]]:
        """(builtin, Presidio entity) pairs that ``fallback: regex`` checks."""
        wanted = self.entities or list(PRESIDIO_BUILTINS)
        return [(PRESIDIO_BUILTINS[e], e) for e in wanted if e in PRESIDIO_BUILTINS]
