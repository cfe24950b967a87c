"""Request guardrails: each request guard, in order, over the texts of its scope.

A mask rewrites the texts in place (so the provider, and a logged prompt, see only the masked
text); a reject answers the client at once in its API's error shape, with the guard's status,
body and headers. Runs after request shaping, so prompts the gateway adds are checked too.
"""

from __future__ import annotations

from collections.abc import Callable

from extproc.guardrails import base
from extproc.guardrails.base import ALLOW, Guard, TextItem, Verdict
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Needs, Stage

_GUARDED_APIS = frozenset({"completions", "messages", "embeddings"})


class RequestGuardrails(Stage):
    name = "request_guardrails"
    needs = Needs.REQUEST_BODY

    def __init__(self, guards: list[Guard]) -> None:
        self.guards = guards

    async def on_request(self, ex: Exchange) -> None:
        req = ex.llm
        if req is None or req.api not in _GUARDED_APIS:
            return
        for guard in self.guards:
            items = [TextItem(*t) for t in req.texts(guard.scope)]
            verdict = await guard.check("request", items, ex) if items else Verdict(ALLOW)
            base.record(ex, "request", guard, verdict)
            if verdict.texts is not None and any(t is not None for t in verdict.texts):
                req.visit_text(guard.scope, _replacing(verdict.texts))
            if verdict.blocks:
                raise verdict.error()


def _replacing(texts: list[str | None]) -> Callable[[str, str, str], str | None]:
    """A visitor giving each visited text its replacement, in order (the order ``texts`` saw)."""
    replacements = iter(texts)
    return lambda role, scope, text: next(replacements, None)
