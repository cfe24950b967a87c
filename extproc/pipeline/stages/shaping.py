"""Request shaping, agentgateway's ``ai`` policy: model aliases, defaults, overrides, prompts.

Runs first, so every later stage (entitlements, guardrails, limits) sees the request
as it will reach the provider. A provider's configured ``model`` still wins at egress.
"""

from __future__ import annotations

from typing import Any

from extproc.config.ai import AIPolicy
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Needs, Stage


def pattern_matches(pattern: str, model: str) -> bool:
    """``*`` matches any run of characters (agentgateway's wildcard); nothing else is special."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == model
    if not model.startswith(parts[0]) or not model.endswith(parts[-1]):
        return False
    at, end = len(parts[0]), len(model) - len(parts[-1])
    if at > end:
        return False
    for part in parts[1:-1]:
        found = model.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


def resolve_alias(aliases: dict[str, str], model: str) -> str | None:
    """The alias target for ``model``: an exact name first, else the longest matching pattern."""
    if model in aliases:
        return aliases[model]
    best: str | None = None
    for pattern in aliases:
        if "*" in pattern and pattern_matches(pattern, model) and (best is None or len(pattern) > len(best)):
            best = pattern
    return aliases[best] if best is not None else None


class RequestShaping(Stage):
    name = "request_shaping"
    needs = Needs.REQUEST_BODY

    def __init__(self, policy: AIPolicy) -> None:
        self.aliases = dict(policy.model_aliases)
        self.defaults: dict[str, Any] = dict(policy.defaults)
        self.overrides: dict[str, Any] = dict(policy.overrides)
        prompts = policy.prompts
        self.prepend = [m.model_dump() for m in prompts.prepend] if prompts else []
        self.append = [m.model_dump() for m in prompts.append] if prompts else []

    async def on_request(self, ex: Exchange) -> None:
        req = ex.llm
        if req is None:
            return
        body = req.body
        if self.aliases and req.model:
            target = resolve_alias(self.aliases, req.model)
            if target is not None:
                req.model = target
        for key, value in self.defaults.items():
            if key not in body:
                body[key] = value
                req.mark_changed()
        for key, value in self.overrides.items():
            if value is None:  # an override of null removes the field
                if body.pop(key, None) is not None:
                    req.mark_changed()
            elif body.get(key) != value:
                body[key] = value
                req.mark_changed()
        if req.api in ("completions", "messages"):
            req.add_messages("prepend", self.prepend)
            req.add_messages("append", self.append)
