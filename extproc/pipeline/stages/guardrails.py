"""The guardrail stages a route's ``promptGuard`` asks for (none without it)."""

from __future__ import annotations

from extproc import guardrails
from extproc.config.ai import AIPolicy
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.guard_request import RequestGuardrails
from extproc.pipeline.stages.guard_response import ResponseGuardrails


def guardrail_stages(ai: AIPolicy) -> list[Stage]:
    config = ai.prompt_guard
    if config is None:
        return []
    request, response = guardrails.build(config)
    stages: list[Stage] = []
    if request:
        stages.append(RequestGuardrails(request))
    if response:
        stages.append(ResponseGuardrails(response, streaming=config.streaming == "Enabled"))
    return stages
