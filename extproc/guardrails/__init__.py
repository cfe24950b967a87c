"""Guardrails (``policies.ai.promptGuard``): guards on the request and on the answer, streams included.

``build`` turns a route's config into its guards, once per route. A guard kind is one class in
``KINDS`` (extproc/guardrails/base.py says what it implements); the pipeline stages that run
them are extproc/pipeline/stages/guard_request.py and guard_response.py.
"""

from __future__ import annotations

from extproc.config.guardrails import GuardSpec, PromptGuard
from extproc.guardrails.base import Guard
from extproc.guardrails.bedrock import BedrockGuard
from extproc.guardrails.model_armor import ModelArmorGuard
from extproc.guardrails.moderation import ModerationGuard
from extproc.guardrails.presidio import PresidioGuard
from extproc.guardrails.regex_guard import RegexGuard
from extproc.guardrails.webhook import WebhookGuard

KINDS: dict[str, type[Guard]] = {
    "regex": RegexGuard,
    "webhook": WebhookGuard,
    "openAIModeration": ModerationGuard,
    "googleModelArmor": ModelArmorGuard,
    "presidio": PresidioGuard,
    "bedrockGuardrails": BedrockGuard,
}


def build_guard(spec: GuardSpec, max_hold: int) -> Guard:
    if spec.kind == "regex":
        guard: Guard = RegexGuard(spec, max_hold)
    elif spec.kind == "presidio":  # its regex fallback holds a stream as a regex guard does
        guard = PresidioGuard(spec, max_hold)
    else:
        guard = KINDS[spec.kind](spec)
    guard.max_hold = max_hold  # what a remote guard's stream window may hold (overlap.py)
    return guard


def build(config: PromptGuard) -> tuple[list[Guard], list[Guard]]:
    """(request guards, response guards), in config order."""
    hold = config.stream_max_hold
    return (
        [build_guard(s, hold) for s in config.request_specs()],
        [build_guard(s, hold) for s in config.response_specs()],
    )
