"""What the router phase asks of a route on every request, worked out once per route.

The answers depend on the route's config alone (its policies, backends and providers), so they
are computed on a route's first request and kept. A config reload builds new route objects: a
new object with the same id replaces the old one's entry, so the cache holds one per route id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from extproc.gateway import ResolvedRoute, Upstream
from extproc.pipeline import outbound


@dataclass(slots=True)
class RouteFacts:
    needs_authz: bool
    direct: Upstream | None  # ``route.direct_upstream``
    forward: tuple[str, ...]  # the ai policy's forwardHeaders
    tables: tuple[dict[str, str], ...]  # the ``routes`` maps (the policy's, then each backend's)
    model_from_config: bool  # every provider names its model, or the ai policy supplies one
    upstreams: tuple[Upstream, ...]
    _translates: dict[str, bool] = field(default_factory=dict)

    def translates(self, api: str) -> bool:
        """Whether some provider of the route answers ``api`` in another format than the client's."""
        found = self._translates.get(api)
        if found is None:
            found = self._translates[api] = any(outbound.may_translate(u, api) for u in self.upstreams)
        return found


def _tables(route: ResolvedRoute) -> tuple[dict[str, str], ...]:
    tables: list[dict[str, str]] = []
    if route.policies.ai is not None and route.policies.ai.routes:
        tables.append(dict(route.policies.ai.routes))
    for backend in route.backends:
        table = backend.upstreams[0].routes if backend.upstreams else None
        if table:
            tables.append(dict(table))
    return tuple(tables)


def _model_from_config(route: ResolvedRoute) -> bool:
    ai = route.policies.ai
    if ai is not None and ("model" in ai.defaults or "model" in ai.overrides):
        return True
    return all(u.model for b in route.backends for u in b.upstreams)


def _build(route: ResolvedRoute) -> RouteFacts:
    ai = route.policies.ai
    return RouteFacts(
        needs_authz=route.needs_authz,
        direct=route.direct_upstream,
        forward=tuple(ai.forward_headers) if ai is not None else (),
        tables=_tables(route),
        model_from_config=_model_from_config(route),
        upstreams=tuple(u for b in route.backends for u in b.upstreams),
    )


_cache: dict[str, tuple[ResolvedRoute, RouteFacts]] = {}


def of(route: ResolvedRoute) -> RouteFacts:
    hit = _cache.get(route.id)
    if hit is not None and hit[0] is route:
        return hit[1]
    facts = _build(route)
    _cache[route.id] = (route, facts)
    return facts
