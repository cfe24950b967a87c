"""Where limit counters live: the interface, and the in-process store (the embedded default).

Two kinds of counter, both named by a storage key the caller builds:

- a **fixed window** (``rate == 0``): how much was used since the window started; the key holds
  the window's start, and the counter is forgotten when the window ends (``window_end``);
- a **token bucket** (``rate > 0``): how much is left, refilled continuously at ``rate`` per
  second up to ``limit``, as Envoy's own token bucket refills. It may go below zero: usage
  reported after the call can exceed what was reserved (the debt is paid back by refills).

``reserve`` is check-and-reserve, atomic over all the counters a request touches: either every
enforced counter has room for its cost and all are charged, or none is (a refused request costs
nothing). ``adjust`` changes what a reservation took once the real cost is known (a negative
delta gives back). The clock is the caller's (``now``), so budgets with calendar periods and
tests with a controllable clock use the same stores. The Redis store (redis_store.py) keeps the
same semantics in one Lua script per call.

Managing quotas (extproc/limits/managed.py, the admin API) adds three calls and one record:

- an **override** (``set_override``): a limit for one counter that wins over the caller's
  ``limit``, kept under its own key (``Counter.override``) so it outlives windows and reloads of
  the file the limit came from. ``reserve`` and ``peek`` read it in the same atomic step and
  write the limit in force back into the ``Counter`` (``apply_override``): for a window it is the
  most per window, the window's use so far counting against it; for a bucket it is the new size,
  and the refill rate scales with it (the bucket still fills from empty in the same time);
  tokens above a smaller size are gone, a larger one fills up by refilling;
- ``peek``: each counter's level now (a window's use, a bucket's tokens) and its override,
  changing nothing;
- ``reset``: the counters back to a period's start: a window's use to 0, a bucket full.

Adding usage by hand is ``reserve`` with ``enforce=False`` (always taken, and it creates the
window); taking usage back is ``adjust`` with a negative delta (a window's use stops at 0, a
bucket at its size).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not answer (Redis down or too slow): the policy's failureMode decides."""


# Slotted: these are built for every request (a frozen dataclass's __init__ costs twice as much).
@dataclass(slots=True)
class Counter:
    key: str  # the storage key (a window's start is part of it)
    limit: int  # a window's most per window, or a bucket's size
    cost: int  # what this request takes now
    rate: float = 0.0  # a bucket's refill per second; 0 for a fixed window
    window_end: float = 0.0  # a window's end (clock seconds)
    enforce: bool = True  # False (shadow mode): counted, never refuses
    override: str = ""  # the key of this counter's override record ("": none is looked up)
    cap: bool = False  # cost is at most the limit in force (a token estimate), at least 1

    @property
    def is_bucket(self) -> bool:
        return self.rate > 0


@dataclass(slots=True)
class State:
    """One counter after a reservation, as the x-ratelimit headers report it."""

    fits: bool  # the cost fitted (for a shadow counter: would have)
    remaining: float  # left after this request (before it, if nothing was taken); < 0 in debt
    reset: float  # seconds: until a window ends; until a bucket has a whole token again
    retry_after: float  # seconds until this cost would fit (0 when it fits)


@dataclass(slots=True)
class Reservation:
    taken: bool
    counters: tuple[Counter, ...]
    states: tuple[State, ...]


def state_of(counter: Counter, before: float, taken: bool, now: float) -> State:
    """The counter's state from its level before the request (a bucket's tokens, a window's use)."""
    cost = counter.cost
    if counter.is_bucket:
        fits = before >= cost
        left = before - cost if taken else before
        reset = 0.0 if left >= 1 else (1 - left) / counter.rate
        retry = 0.0 if fits else (cost - before) / counter.rate
        return State(fits, left, reset, retry)
    fits = before + cost <= counter.limit
    left = counter.limit - (before + cost if taken else before)
    until_end = max(0.0, counter.window_end - now)
    return State(fits, left, until_end, 0.0 if fits else until_end)


@dataclass(slots=True)
class Peek:
    level: float  # a window's use so far; a bucket's tokens now
    override: int | None  # the override record's limit, when there is one


def apply_override(counter: Counter, value: int | None) -> None:
    """The limit in force, written into the counter (both stores apply it the same way)."""
    if value is None or value == counter.limit:
        return
    if counter.is_bucket:
        value = max(1, value)  # a bucket of size 0 would be no bucket (rate 0 is a window)
        counter.rate = counter.rate * value / counter.limit
    counter.limit = value
    if counter.cap:
        counter.cost = max(1, min(counter.cost, value))


class Ready(Generic[T]):
    """An answer already known, to await like one still on its way (no event loop turn)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self.value
        yield  # a generator that returns at once


async def was_taken(asked: Awaitable[Reservation]) -> bool:
    """Whether a reservation no one awaited (a stage refused before ``decide``) was taken: what
    ``on_complete`` must then give back. A store that failed took nothing."""
    try:
        return (await asked).taken
    except StoreUnavailable:
        return False


# The stage_state key under which the rate limit stage leaves its Shared call for the budget stage.
SHARED = "shared_reservation"
# Shared.refuse's counter: a window of 0 that is never written (nothing is taken with it in).
REFUSED = "shared:refused"


class Shared:
    """One store call for the counters of two stages of one request (the rate limits' and the
    budgets'), all or nothing across them: a request that either refuses takes nothing from the
    other. Each stage ``add``s its counters and awaits its own part of the answer (its counters'
    states, and whether the call took anything). The call is sent by ``send`` (the last stage to
    add, as its on_request ends) or, if that never came, when a part is first awaited.

    The first part awaited reads the answer for both (the router awaits them one after the
    other). If that read is cancelled (its stream ended), what the store took is unknown: the
    other part then fails as the store would (``StoreUnavailable``), so its stage gives nothing
    back, as one stage alone does when its stream ends while it waits."""

    __slots__ = ("_asked", "_error", "_reading", "_value", "counters", "now", "store")

    def __init__(self, store: Store, now: float) -> None:
        self.store = store
        self.now = now
        self.counters: list[Counter] = []
        self._asked: Awaitable[Reservation] | None = None
        self._value: Reservation | None = None
        self._error: StoreUnavailable | None = None
        self._reading = False

    @property
    def sent(self) -> bool:
        return self._asked is not None

    def add(self, counters: Sequence[Counter]) -> Awaitable[Reservation]:
        if self._asked is not None:
            raise RuntimeError("counters added after the shared reservation was sent")
        start = len(self.counters)
        self.counters.extend(counters)
        return self._part(start, len(self.counters))

    def refuse(self) -> None:
        """Nothing is to be taken (a later stage refuses the request anyway): one counter that can
        never fit goes in the call, which still tells the other stage whether its own fit, so
        that its refusal, if any, is the answer."""
        if self._asked is None:
            self.counters.append(Counter(REFUSED, 0, 1, window_end=self.now + 60))

    def send(self) -> None:
        if self._asked is None:
            self._asked = self.store.reserve(self.counters, self.now)

    async def _part(self, start: int, end: int) -> Reservation:
        got = await self._answer()
        return Reservation(got.taken, got.counters[start:end], got.states[start:end])

    async def _answer(self) -> Reservation:
        if self._value is not None:
            return self._value
        if self._error is not None:
            raise self._error
        if self._reading:
            raise RuntimeError("the parts of a shared reservation are awaited one after the other")
        self.send()
        assert self._asked is not None
        self._reading = True
        try:
            self._value = await self._asked
        except StoreUnavailable as exc:
            self._error = exc
            raise
        except BaseException:  # cancelled mid-read: what the store took is unknown
            self._error = StoreUnavailable("the shared reservation's answer was lost with its stream")
            raise
        finally:
            self._reading = False
        return self._value


class Store(Protocol):
    # False for a store across the network: settling is then sent off the request's path.
    in_process: bool

    # Sent (or, in process, done) when called, not when awaited: a caller can work while the
    # store answers (the limit stages send in on_request and await in decide). Always await it.
    def reserve(self, counters: Sequence[Counter], now: float) -> Awaitable[Reservation]: ...

    async def adjust(self, counters: Sequence[Counter], deltas: Sequence[int], now: float) -> None: ...

    async def peek(self, counters: Sequence[Counter], now: float) -> list[Peek]: ...

    async def reset(self, counters: Sequence[Counter], now: float) -> None: ...

    async def set_override(self, key: str, value: int | None) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Counters in this process. Atomic without locks: nothing awaits between check and charge,
    and an event loop runs one coroutine at a time. Per process: with several extproc workers
    each keeps its own counts (README; the supervisor warns)."""

    SWEEP_EVERY = 4096  # operations between sweeps of ended windows and refilled buckets
    in_process = True

    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, float]] = {}  # key -> (used, window end)
        # key -> (level, when, size, rate): size and rate so a sweep can tell a full bucket
        self.buckets: dict[str, tuple[float, float, int, float]] = {}
        self.overrides: dict[str, int] = {}  # override key -> limit; never swept (operators set them)
        self._ops = 0

    def _resolve(self, counters: Sequence[Counter]) -> list[int | None]:
        found = []
        for c in counters:
            value = self.overrides.get(c.override) if c.override else None
            apply_override(c, value)
            found.append(value)
        return found

    def _level(self, c: Counter, now: float) -> float:
        if c.is_bucket:
            got = self.buckets.get(c.key)
            if got is None:
                return float(c.limit)
            level, when = got[0], got[1]
            return min(float(c.limit), level + max(0.0, now - when) * c.rate)
        used = self.windows.get(c.key)
        return float(used[0]) if used is not None and used[1] > now else 0.0

    def reserve(self, counters: Sequence[Counter], now: float) -> Awaitable[Reservation]:
        return Ready(self._reserve(counters, now))

    def _reserve(self, counters: Sequence[Counter], now: float) -> Reservation:
        self._tick(now)
        if self.overrides:
            self._resolve(counters)
        before = [self._level(c, now) for c in counters]
        taken = all(
            not c.enforce or (b >= c.cost if c.is_bucket else b + c.cost <= c.limit)
            for c, b in zip(counters, before, strict=True)
        )
        if taken:
            for c, b in zip(counters, before, strict=True):
                self._set(c, b - c.cost if c.is_bucket else b + c.cost, now)
        states = tuple(state_of(c, b, taken, now) for c, b in zip(counters, before, strict=True))
        return Reservation(taken, tuple(counters), states)

    async def adjust(self, counters: Sequence[Counter], deltas: Sequence[int], now: float) -> None:
        for c, delta in zip(counters, deltas, strict=True):
            if not delta:
                continue
            level = self._level(c, now)
            if c.is_bucket:
                self._set(c, min(float(c.limit), level - delta), now)
            elif c.key in self.windows and c.window_end > now:  # an ended window is not revived
                self._set(c, max(0.0, level + delta), now)

    async def peek(self, counters: Sequence[Counter], now: float) -> list[Peek]:
        found = self._resolve(counters)
        return [Peek(self._level(c, now), v) for c, v in zip(counters, found, strict=True)]

    async def reset(self, counters: Sequence[Counter], now: float) -> None:
        for c in counters:  # a missing window is an unused one, a missing bucket a full one
            self.windows.pop(c.key, None)
            self.buckets.pop(c.key, None)

    async def set_override(self, key: str, value: int | None) -> None:
        if value is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = value

    def _set(self, c: Counter, value: float, now: float) -> None:
        if c.is_bucket:
            self.buckets[c.key] = (value, now, c.limit, c.rate)
        else:
            self.windows[c.key] = (int(value), c.window_end)

    def _tick(self, now: float) -> None:
        """Forget what no longer matters: ended windows, and buckets that are full again (a
        missing bucket is a full one), so memory follows the active callers, not all callers."""
        self._ops += 1
        if self._ops % self.SWEEP_EVERY:
            return
        self.windows = {k: v for k, v in self.windows.items() if v[1] > now}
        self.buckets = {k: v for k, v in self.buckets.items() if v[0] + (now - v[1]) * v[3] < v[2]}

    async def close(self) -> None:
        return None


def whole_seconds(value: float) -> int:
    """Header seconds: rounded up, so a client that waits that long finds room."""
    return max(0, math.ceil(value - 1e-9))
