"""The regex guard: builtin recognizers and custom patterns, masked or rejected, streams included."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extproc.config.guardrails import GuardSpec
from extproc.config.guardrails import RegexGuard as RegexConfig
from extproc.guardrails.base import (
    ALLOW,
    MASK,
    Guard,
    StreamFilter,
    StreamRejected,
    TextItem,
    Verdict,
    rejected,
)
from extproc.guardrails.masker import DEFAULT_MAX_HOLD, Matcher, Window
from extproc.guardrails.patterns import Rule, compile_builtin, compile_pattern

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange


def rules_of(config: RegexConfig) -> list[Rule]:
    out = []
    for rule in config.rules:
        replacement = rule.replacement or config.replacement
        if rule.builtin is not None:
            out.append(
                compile_builtin(rule.builtin, replacement or (f"<{rule.name}>" if rule.name else None))
            )
        else:
            assert rule.pattern is not None
            out.append(compile_pattern(rule.pattern, rule.name, replacement))
    return out


def _names(rules: list[Rule]) -> list[str]:
    seen: list[str] = []
    for r in rules:
        if r.label not in seen:
            seen.append(r.label)
    return seen


class RegexGuard(Guard):
    kind = "regex"

    def __init__(self, spec: GuardSpec, max_hold: int = DEFAULT_MAX_HOLD) -> None:
        super().__init__(spec)
        config: RegexConfig = spec.config
        self.reject = config.verb == "reject"
        self.matcher = Matcher(rules_of(config), max_hold)

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        return self.check_texts([i.text for i in items])

    def check_texts(self, texts: list[str]) -> Verdict:
        replaced: list[str | None] = []
        hit: list[Rule] = []
        for text in texts:
            masked, found = self.matcher.mask(text)
            replaced.append(masked if found else None)
            hit += [f.rule for f in found]
        if not hit:
            return Verdict(ALLOW)
        if self.reject:
            verdict = rejected(self.spec.rejection, matched=_names(hit))
            verdict.texts = replaced  # the prompt as the log may show it
            return verdict
        return Verdict(MASK, replaced, matched=_names(hit))

    def stream(self, ex: Exchange) -> StreamFilter:
        return RegexFilter(self)


class RegexFilter(StreamFilter):
    """A streamed text through the guard's window: masked, or rejected at the first match."""

    def __init__(self, guard: RegexGuard) -> None:
        super().__init__()
        self.guard = guard
        self.window: Window = guard.matcher.window()

    async def feed(self, text: str) -> str:
        return self._after(self.window.feed(text))

    async def flush(self) -> str:
        return self._after(self.window.flush())

    def _after(self, out: str) -> str:
        hits = self.window.hits
        if not hits:
            return out
        names = _names(hits)
        if self.guard.reject:
            self.verdict = rejected(self.guard.spec.rejection, matched=names)
            raise StreamRejected(self.verdict)
        self.verdict = Verdict(MASK, matched=names)
        return out
