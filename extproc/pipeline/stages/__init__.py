"""The stages a route runs, in order, built once from its policies."""

from __future__ import annotations

from extproc.gateway import ResolvedRoute
from extproc.pipeline.stage import Needs, Stage
from extproc.pipeline.stages.shaping import RequestShaping
from extproc.pipeline.stages.usage_record import UsageRecord


def for_route(route: ResolvedRoute) -> list[Stage]:
    stages: list[Stage] = []
    ai = route.policies.ai
    if ai is not None:
        stages.append(RequestShaping(ai))
    stages.append(UsageRecord())
    return stages


def needs(stages: list[Stage]) -> Needs:
    out = Needs.NONE
    for stage in stages:
        out |= stage.needs
    return out
