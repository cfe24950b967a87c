"""The attempts a request took, as the usage record lists them, from what Envoy tells the router
phase at response headers (which endpoint answered, after how many attempts)."""

from __future__ import annotations

from extproc.gateway import ResolvedRoute, Upstream
from extproc.pipeline.exchange import AttemptRecord


def attempts_of(
    route: ResolvedRoute, up: Upstream | None, count_text: str, details: str, status: int
) -> list[AttemptRecord]:
    """Failed attempts went, one priority level (provider group) each, before the one that answered."""
    try:
        count = max(1, int(count_text))
    except ValueError:
        count = 1
    records = []
    if count > 1:  # the failed attempts' levels (most requests have none: worked out only then)
        backend = next((b for b in route.backends if up in b.upstreams), route.backends[0])
        levels = sorted({u.priority for u in backend.upstreams})
        for n in range(1, count):
            level = levels[min(n - 1, len(levels) - 1)]
            names = "|".join(u.name for u in backend.upstreams if u.priority == level)
            records.append(AttemptRecord(n, names, "retried"))
    answered = details in ("", "via_upstream")
    name = up.name if up is not None else "-"
    records.append(AttemptRecord(count, name, "answered" if answered else "failed", status))
    return records
