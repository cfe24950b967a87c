"""Who enforces a route's limits: Envoy by itself, or the pipeline's rate limit stage.

Envoy's local_ratelimit filter costs no Python on the request's path, so a route whose only limit
is one request-count bucket (``localRateLimit`` with ``type: requests``) is left to Envoy. Its
bucket is shared by Envoy's worker threads (``local_rate_limit_per_downstream_connection:
false``), so it holds for the whole Envoy process whatever ``--concurrency`` is. Everything else
is the stage's: token buckets (they need the request's estimate and the answer's usage),
identity-keyed limits (``rateLimits``), ``remoteRateLimit``, several buckets on one route (Envoy
would send one set of x-ratelimit headers per filter), and a route with several matches
(Envoy's per-route bucket is per Envoy route, and each match is one: the limit would multiply).
"""

from __future__ import annotations

from extproc.config.ratelimit import LocalRateLimit
from extproc.gateway import ResolvedRoute


def envoy_bucket(route: ResolvedRoute) -> LocalRateLimit | None:
    """The bucket Envoy enforces for this route, if that is all the route limits."""
    p = route.policies
    buckets = p.local_rate_limit or []
    if len(buckets) != 1 or buckets[0].type != "requests":
        return None
    if p.rate_limits is not None or p.remote_rate_limit is not None:
        return None
    if len(route.matches) > 1:
        return None
    return buckets[0]


def stage_needed(route: ResolvedRoute) -> bool:
    p = route.policies
    if envoy_bucket(route) is not None:
        return False
    return bool(p.local_rate_limit) or p.rate_limits is not None or p.remote_rate_limit is not None
