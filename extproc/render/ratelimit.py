"""Envoy's own local_ratelimit filter, for the routes whose only limit is one request bucket
(extproc/limits/plan.py says which): no Python on the path of a request it refuses or passes.

- In the chain after ext_authz (only callers the route accepts use its quota) and before the
  router-level ext_proc (a refused request never reaches the sidecar). Without a bucket of its
  own the filter does nothing; each such route's ``typed_per_filter_config`` gives it one.
- The bucket is shared by all of Envoy's worker threads (``local_rate_limit_per_downstream_
  connection: false``), so the limit is per Envoy process whatever ``--concurrency`` is. Envoy
  refills it continuously (``tokensPerFill`` per ``fillInterval``, spread evenly), as the
  stage's buckets refill.
- ``enable_x_ratelimit_headers: DRAFT_VERSION_03``: Envoy sends ``x-ratelimit-limit`` (the
  bucket's size), ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` (seconds to the next
  token) on passing and refused answers. ``retry-after`` is not Envoy's: it is added to refused
  answers as the time one token takes to come back, the most a refused client has to wait.
- The 429 is Envoy's local reply, given the client API's error JSON by the mapper below, which
  recognizes it by its details (``local_rate_limited``) with a CEL filter: the gateway's own 429s
  (the stage's) are already in that shape and must not be rewritten.
"""

from __future__ import annotations

import math

from extproc.gateway import Gateway, ResolvedRoute
from extproc.limits.plan import envoy_bucket
from extproc.render.common import Json, seconds, typed

LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
_TYPE = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
_ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
# The same message as the stage's for a route's request bucket (extproc/limits/quota.py).
MESSAGE = (
    "rate limit exceeded (localRateLimit[0] on route %ROUTE_NAME%): too many requests; "
    "retry after the time in retry-after"
)


def used(gw: Gateway) -> bool:
    return any(envoy_bucket(r) is not None for r in gw.routes)


def chain_filter() -> Json:
    return {"name": LOCAL_RATELIMIT, "typed_config": typed(_TYPE, stat_prefix="local_rate_limit")}


def per_route(route: ResolvedRoute) -> Json | None:
    bucket = envoy_bucket(route)
    if bucket is None:
        return None
    retry_after = math.ceil(bucket.interval_seconds / bucket.tokens_per_fill)
    return typed(
        _TYPE,
        stat_prefix="local_rate_limit",
        token_bucket={
            "max_tokens": bucket.max_tokens,
            "tokens_per_fill": bucket.tokens_per_fill,
            "fill_interval": seconds(bucket.interval_seconds),
        },
        filter_enabled={"runtime_key": "gw.local_rate_limit.enabled", **_ALL},
        filter_enforced={"runtime_key": "gw.local_rate_limit.enforced", **_ALL},
        local_rate_limit_per_downstream_connection=False,
        enable_x_ratelimit_headers="DRAFT_VERSION_03",
        response_headers_to_add=[
            {
                "header": {"key": "retry-after", "value": str(max(1, retry_after))},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    )


def is_local_rate_limited() -> Json:
    """An access-log filter true for Envoy's local_ratelimit replies only."""
    return _cel('response.code_details == "local_rate_limited"')


def _cel(expression: str) -> Json:
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": typed(
                "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", expression=expression
            ),
        }
    }


def not_gateway_reply() -> Json:
    """An access-log filter false for the gateway's own immediate responses (details ``gateway_*``)."""
    return _cel('!response.code_details.startsWith("gateway_")')
