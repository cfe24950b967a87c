"""The stages a route runs, in order, built once from its policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from extproc.gateway import ResolvedRoute
from extproc.pipeline.stage import Needs, Stage
from extproc.pipeline.stages.guardrails import guardrail_stages
from extproc.pipeline.stages.shaping import RequestShaping
from extproc.pipeline.stages.span_notes import SpanNotes
from extproc.pipeline.stages.usage_record import UsageRecord
from extproc.telemetry import runtime

if TYPE_CHECKING:
    from extproc.limits.context import LimitsContext


def for_route(route: ResolvedRoute, limits: LimitsContext | None = None) -> list[Stage]:
    stages: list[Stage] = []
    ai = route.policies.ai
    if ai is not None:
        stages.append(RequestShaping(ai))
        # Request guards, then response guards (before the record). A refused prompt costs
        # no quota: guards run before the limits reserve.
        stages += guardrail_stages(ai)
    # After shaping: limits key on the model the request will use.
    limit = limits.stage_for(route) if limits is not None else None
    if limit is not None:
        stages.append(limit)
    # After the rate limits, in one store call with theirs, all or nothing: a request they
    # refuse is charged no dollars, and one the budgets refuse uses none of its rate limits.
    budget = limits.budget_stage_for(route) if limits is not None else None
    if budget is not None:
        if limit is not None and limit.store is budget.store:
            limit.budget_follows = True
        stages.append(budget)
    if runtime.current().tracer is not None:  # finish reasons for the chat span
        stages.append(SpanNotes())
    stages.append(UsageRecord())
    return stages


@dataclass(frozen=True)
class RoutePipeline:
    """A route's stages and what follows from them, worked out once, not per request or chunk."""

    stages: list[Stage]
    needs: Needs = Needs.NONE
    # Only the stages that look at the answer's bytes are called for each chunk.
    chunk_stages: list[Stage] = field(default_factory=list)
    # The stages that take an answer once every stage has asked (Stage.decide).
    deciding: list[Stage] = field(default_factory=list)
    # A chunk stage may change the answer's bytes (Stage.changes_answer).
    rewrites: bool = False
    # Of the stages that read the answer, none but the usage record and the span notes: a whole
    # answer's usage from Envoy's access log serves them (pipeline/answer_log.py).
    observes_only: bool = False

    @classmethod
    def of(cls, stages: list[Stage]) -> RoutePipeline:
        needs = Needs.NONE
        for stage in stages:
            needs |= stage.needs
        chunk = [s for s in stages if type(s).on_response_chunk is not Stage.on_response_chunk]
        deciding = [s for s in stages if type(s).decide is not Stage.decide]
        answer = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY
        readers = [s for s in stages if s.needs & answer]
        observes = bool(readers) and all(isinstance(s, UsageRecord | SpanNotes) for s in readers)
        return cls(stages, needs, chunk, deciding, any(s.changes_answer for s in chunk), observes)


EMPTY = RoutePipeline([])
