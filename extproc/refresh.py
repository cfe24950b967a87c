"""A value that a blocking call fetches and that expires: credentials, access tokens.

The fetch runs in a worker thread, never on the event loop, and only one runs at a
time (callers that need the value while it is being fetched wait for that fetch,
they do not start their own). A value that is getting old is refreshed in the
background while callers keep using it; only a value that is no longer usable
makes callers wait. A failed fetch is remembered for a short, growing backoff
(so a broken credential source is not hammered at request rate) and then tried
again: a failure is never cached for good.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("gateway.credentials")

T = TypeVar("T")

# Shared by every refreshing value: each has at most one fetch in flight, and a
# pool of its own keeps slow credential sources from starving asyncio.to_thread users.
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="credentials")


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """A fetched value and, in clock seconds, when to renew it (None: never)."""

    value: T
    refresh_at: float | None = None  # from here on, renew in the background
    usable_until: float | None = None  # from here on, callers wait for a new value


class Refreshing(Generic[T]):
    """``fetch`` (blocking) run in a worker thread, single-flight, with refresh ahead and backoff."""

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Fetched[T]],
        *,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()  # the loop thread and the worker thread both update state
        self._current: Fetched[T] | None = None
        self._inflight: Future[Fetched[T]] | None = None
        self._error: Exception | None = None
        self._failures = 0
        self._next_try = 0.0  # no fetch before this (backoff)

    async def get(self) -> T:
        """The value; waits (without blocking the loop) only when there is no usable one."""
        ready = self._ready_or_fetch()
        if not isinstance(ready, Future):
            return ready.value
        # shield: a cancelled caller (client gone) must not cancel the fetch others wait for.
        fetched = await asyncio.shield(asyncio.wrap_future(ready))
        return fetched.value

    def get_blocking(self) -> T:
        """The same value for synchronous callers (blocks the calling thread while fetching)."""
        ready = self._ready_or_fetch()
        return ready.result().value if isinstance(ready, Future) else ready.value

    def in_flight(self) -> Future[Fetched[T]] | None:
        """The fetch under way, if any (tests wait for background refreshes with it)."""
        return self._inflight

    def reset(self) -> None:
        """Forget the value and any failure (credential rotation, tests)."""
        with self._lock:
            self._current = None
            self._error = None
            self._failures = 0
            self._next_try = 0.0

    def _ready_or_fetch(self) -> Fetched[T] | Future[Fetched[T]]:
        now = self._clock()
        current = self._current  # one attribute read: a consistent snapshot without the lock
        if current is not None and _before(now, current.usable_until):
            if not _before(now, current.refresh_at):
                self._start_background(now)
            return current
        with self._lock:
            if self._inflight is not None:
                return self._inflight
            if now < self._next_try:
                if self._error is not None:
                    raise self._error.with_traceback(None)
                if self._current is not None:
                    # The source answered moments ago with nothing newer: use its answer.
                    return self._current
            return self._start()

    def _start_background(self, now: float) -> None:
        with self._lock:
            if self._inflight is None and now >= self._next_try:
                self._start()

    def _start(self) -> Future[Fetched[T]]:
        # Called with the lock held; the worker takes it only when the fetch is done.
        future = _EXECUTOR.submit(self._run)
        self._inflight = future
        return future

    def _run(self) -> Fetched[T]:
        try:
            fetched = self._fetch()
        except Exception as exc:
            with self._lock:
                self._failures += 1
                delay = self._backoff()
                self._error = exc
                self._next_try = self._clock() + delay
                self._inflight = None
            log.warning("%s: fetch failed (%s); next try in %.1fs", self.name, exc, delay)
            raise
        with self._lock:
            now = self._clock()
            self._current = fetched
            self._error = None
            if _before(now, fetched.refresh_at):
                self._failures = 0
                self._next_try = 0.0
            else:
                # Already due again (e.g. botocore kept old credentials after a failed advisory
                # refresh): back off like a failure rather than refetch at request rate.
                self._failures += 1
                self._next_try = now + self._backoff()
            self._inflight = None
        return fetched

    def _backoff(self) -> float:
        return float(min(self._max_backoff, self._min_backoff * 2 ** (self._failures - 1)))


def _before(now: float, deadline: float | None) -> bool:
    return deadline is None or now < deadline
