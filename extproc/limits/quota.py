"""What a client is told about its limits: the x-ratelimit headers, retry-after, the 429.

Header names and shapes are Envoy's (``enable_x_ratelimit_headers: DRAFT_VERSION_03``), so a
route whose limit Envoy enforces itself and one whose limit the stage enforces look alike:

- ``x-ratelimit-limit``: a token bucket alone is its size (``10``), as Envoy's local_ratelimit
  writes it; otherwise the most constrained limit, then every limit as ``<n>;w=<seconds>``
  (``60, 60;w=60, 100000;w=3600``), as Envoy's ratelimit filter writes RLS answers;
- ``x-ratelimit-remaining``: what is left of the most constrained limit (never negative);
- ``x-ratelimit-reset``: seconds until it has room again (a window's end; a bucket's next token);
- ``retry-after`` (429 only): seconds until the refused request would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from extproc.limits.store import whole_seconds
from extproc.pipeline.stage import Denied


@dataclass(slots=True)
class Quota:
    """One limit as this request found it."""

    what: str  # for the 429's message: "localRateLimit[0] on route openai (tokens)"
    limit: int
    window: float  # seconds the limit is over: a window's length, or the time to fill a bucket
    bucket: bool
    remaining: float
    reset: float
    fits: bool = True
    retry_after: float = 0.0
    cost: int = 1
    tokens: bool = False


def headers(quotas: list[Quota], refused: Quota | None = None) -> dict[str, str]:
    if not quotas:
        return {}
    worst = refused or min(quotas, key=lambda q: q.remaining)
    if len(quotas) == 1 and worst.bucket:
        limit = str(worst.limit)
    else:
        policies = ", ".join(f"{q.limit};w={_seconds(q.window)}" for q in quotas)
        limit = f"{worst.limit}, {policies}"
    out = {
        "x-ratelimit-limit": limit,
        "x-ratelimit-remaining": str(max(0, math.floor(worst.remaining))),
        "x-ratelimit-reset": str(whole_seconds(worst.reset)),
    }
    if refused is not None:
        out["retry-after"] = str(max(1, whole_seconds(refused.retry_after)))
    return out


def refusal(quotas: list[Quota], extra_headers: dict[str, str] | None = None) -> Denied:
    """The 429 for the first limit that did not fit: the one the client must wait longest for."""
    # (Every quota fits only if the store's answer and ours disagree: the one with least left.)
    over = [q for q in quotas if not q.fits] or [min(quotas, key=lambda q: q.remaining)]
    refused = max(over, key=lambda q: q.retry_after)
    if refused.tokens:
        detail = (
            f"this request needs about {refused.cost} tokens and {max(0, math.floor(refused.remaining))} "
            f"are left"
        )
    else:
        detail = "too many requests"
    message = f"rate limit exceeded ({refused.what}): {detail}; retry after the time in retry-after"
    out = headers(quotas, refused)
    out.update(extra_headers or {})
    return Denied(429, message, code="rate_limit_exceeded", headers=out)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
