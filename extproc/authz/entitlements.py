"""Model entitlements: the models a caller may use, from its API key (``allowedModels``) and the
route's ``modelAccess`` (by group or user). Both apply when both are set."""

from __future__ import annotations

from extproc.authz.caller import Caller, Forbidden, Grant
from extproc.authz.request import AuthRequest
from extproc.config.auth import ModelAccess
from extproc.pipeline.stages.shaping import pattern_matches


def _any_matches(patterns: list[str], model: str) -> bool:
    return any(pattern_matches(p, model) for p in patterns)


class ModelEntitlements:
    name = "modelAccess"

    def __init__(self, access: ModelAccess | None) -> None:
        self.access = access

    async def start(self) -> None:
        return None

    def _patterns(self, caller: Caller) -> list[list[str]]:
        """Every list the model must match (the key's, the caller's groups' or user's)."""
        lists: list[list[str]] = []
        if caller.allowed_models is not None:
            lists.append(caller.allowed_models)
        if self.access is not None:
            access = self.access
            granted: list[str] = list(access.users.get(caller.subject, [])) if caller.subject else []
            named = bool(granted) or caller.subject in access.users
            for group in caller.groups:
                if group in access.groups:
                    named = True
                    granted.extend(access.groups[group])
            lists.append(granted if named else list(access.default))
        return lists

    def allows(self, caller: Caller, model: str) -> bool:
        return all(_any_matches(patterns, model) for patterns in self._patterns(caller))

    async def authorize(self, req: AuthRequest, caller: Caller) -> Grant | None:
        model = req.model
        if not model or req.lists_models:
            return None  # no model to check (the router phase refuses a body without one)
        if not self.allows(caller, model):
            key = caller.api_key_id
            who = f"API key {key}" if key else caller.subject or "anonymous callers"
            raise Forbidden(f"model {model!r} is not allowed for {who}", code="model_not_allowed")
        return None

    async def allowed_models(self, req: AuthRequest, caller: Caller, models: list[str]) -> list[str]:
        return [m for m in models if self.allows(caller, m)]

    @property
    def restricts(self) -> bool:
        return self.access is not None
