"""A route's auth: its authenticators, then its authorizers, in one decision.

Who calls: the first authenticator that finds its kind of credential decides (valid: the
caller; invalid: 401). None found: 401 if any of them is strict, else anonymous.
May they: model entitlements, CEL rules, OPA, OpenFGA, in that order (cheapest first); any may
refuse. For ``GET /v1/models`` the per-model ones also filter the route's models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from extproc.authz.caller import Caller, Denial, Grant, Unauthenticated
from extproc.authz.entitlements import ModelEntitlements
from extproc.authz.mechanism import AuthContext, Authenticator, Authorizer, ModelFilter
from extproc.authz.request import AuthRequest
from extproc.gateway import ResolvedRoute

log = logging.getLogger("gateway.authz")


@dataclass
class Decision:
    caller: Caller
    grant: Grant
    allowed_models: list[str] | None  # for the models listing; None: no restriction


class RouteAuth:
    def __init__(
        self, route: ResolvedRoute, authenticators: list[Authenticator], authorizers: list[Authorizer]
    ):
        self.route = route
        self.authenticators = authenticators
        self.authorizers = authorizers

    @classmethod
    def build(cls, route: ResolvedRoute, ctx: AuthContext) -> RouteAuth:
        # Imported here: each mechanism pulls in its library (pyjwt, cel, opa_eval, openfga_sdk)
        # only when some route uses it.
        p = route.policies
        authenticators: list[Authenticator] = []
        if p.api_key is not None:
            from extproc.authz.apikeys import ApiKeyAuthenticator

            authenticators.append(ApiKeyAuthenticator(p.api_key, ctx))
        if p.jwt_auth is not None:
            from extproc.authz.jwt_auth import JwtAuthenticator

            authenticators.append(JwtAuthenticator(p.jwt_auth, ctx))
        authorizers: list[Authorizer] = [ModelEntitlements(p.model_access)]
        if p.authorization is not None:
            from extproc.authz.rules import CelRules

            authorizers.append(CelRules(p.authorization))
        if p.opa is not None:
            from extproc.authz.opa import OpaAuthorizer

            authorizers.append(OpaAuthorizer(p.opa, ctx))
        if p.openfga is not None:
            from extproc.authz.openfga import OpenFgaAuthorizer

            authorizers.append(OpenFgaAuthorizer(p.openfga, ctx))
        return cls(route, authenticators, authorizers)

    async def start(self) -> None:
        for a in [*self.authenticators, *self.authorizers]:
            await a.start()

    async def authenticate(self, req: AuthRequest) -> Caller:
        for authenticator in self.authenticators:
            caller = await authenticator.authenticate(req)
            if caller is not None:
                return caller
        if any(a.mode == "strict" for a in self.authenticators):
            names = " or ".join(a.name for a in self.authenticators)
            raise Unauthenticated(f"this route needs credentials ({names})", error="")
        return Caller()

    async def decide(self, req: AuthRequest) -> Decision:
        caller = await self.authenticate(req)
        grant = Grant()
        try:
            for authorizer in self.authorizers:
                grant.merge(await authorizer.authorize(req, caller))
        except Denial as denial:
            denial.caller = caller  # a known caller refused: its record names it
            raise
        allowed: list[str] | None = None
        if req.lists_models:
            allowed = await self._listable(req, caller)
        return Decision(caller, grant, allowed)

    async def _listable(self, req: AuthRequest, caller: Caller) -> list[str] | None:
        models = [m for m, _ in self.route.models()]
        restricted = caller.allowed_models is not None
        for authorizer in self.authorizers:
            if isinstance(authorizer, ModelEntitlements) and not (authorizer.restricts or restricted):
                continue
            if isinstance(authorizer, ModelFilter):
                models = await authorizer.allowed_models(req, caller, models)
                restricted = True
        return models if restricted else None
