"""A short-lived, bounded cache of allow/deny decisions from a remote policy engine.

Decisions are cached for ``ttl`` seconds (a grant revoked in the engine stops working within that
time); at ``max_entries`` the oldest entry goes, so a flood of distinct keys (every user times
every model) costs bounded memory. Errors are never cached: the next request asks again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class DecisionCache:
    def __init__(
        self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        # key -> (expires at, allowed); insertion order is age order (put re-inserts).
        self._entries: dict[Hashable, tuple[float, bool]] = {}

    def get(self, key: Hashable) -> bool | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Hashable, allowed: bool) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + self.ttl, allowed)

    def __len__(self) -> int:
        return len(self._entries)
