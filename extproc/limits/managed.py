"""Quotas as operators manage them: one limit for one subject, read and changed in the store.

A **subject** is whom a limit counts: ``group_id=marketing``, ``user_id=alice``,
``api_key_id=key-1``, or for a nested descriptor several entries (``user_id=alice,model=gpt-4o``).
A **quota** is one limit as it applies to one subject now, named ``<source>/<name>``: a
``rateLimits`` file's limit is ``rateLimits/<domain>/<descriptor path>``
(``rateLimits/llm_gateway/group_id=marketing``, ``rateLimits/llm_gateway/user_id``).

What an operator can do (the admin API's /v1/quotas routes, ``gateway quotas``):

- **read**: used, the limit in force (the configured one or an override), remaining, when the
  period ends;
- **set**: an override record for this subject's counter, kept in the store (every replica
  sharing it sees it on its next request), under a key of its own that does not name the
  window, so it outlives windows and reloads of the policy file; ``None`` clears it;
- **adjust**: add usage (``delta > 0``, charged even past the limit) or take it back
  (``delta < 0``: credit, down to nothing used; more than that is a higher limit, set it);
- **reset**: the current period's usage back to zero (the override, if any, stays).

Sources of quotas are pluggable (``QuotaSource``): this module has the ``rateLimits`` files'
one; anything else that keeps its counters in the same store adds a source that finds its
counters for a subject, and every operation works on them unchanged. Dollar budgets do
(extproc/limits/budget_quotas.py): their unit is ``usd_micros`` (whole micro-dollars, as the
stores' counters are whole numbers); their rows carry dollars too (``limit_usd``, ...), and
their gauges are in dollars with the unit ``usd``, like ``gen_ai_client_cost_usd_total``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from extproc.limits.budget_file import MICRO
from extproc.limits.policy_file import Match
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.store import Counter, Peek, Store, StoreUnavailable
from extproc.limits.values import IDENTITY_KEYS

log = logging.getLogger("gateway.limits")

# Seconds between re-reads of the quotas a process exports as gauges (QuotaManager.refresh).
REFRESH_EVERY = 15.0
# Counters per peek when refreshing: one Lua call stays short.
REFRESH_BATCH = 500

# The metrics' labels of a quota: the quota, its period and unit, then the subject's keys (empty
# when the subject has no value for one).
GAUGE_LABELS = ("quota", "period", "unit", *IDENTITY_KEYS)

# A budget's counter unit (budget_file.MICRO of them make a dollar).
USD_MICROS = "usd_micros"
# A counter unit as the gauges export it, and how many counter units make one of it: dollars,
# not micro-dollars.
METRIC_UNITS: dict[str, tuple[str, int]] = {USD_MICROS: ("usd", MICRO)}


class QuotaError(Exception):
    """A request the manager cannot do: the admin API answers ``status`` naming ``param``."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass(frozen=True)
class Subject:
    entries: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: object, param: str = "subject") -> Subject:
        """``key=value[,key=value]``; keys are the policy files' (api_key_id, user_id, ...)."""
        if not isinstance(text, str) or not text.strip():
            raise QuotaError(400, f"{param}: give key=value, e.g. group_id=marketing", "bad_request", param)
        entries: list[tuple[str, str]] = []
        for part in text.split(","):
            key, eq, value = part.strip().partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not value:
                raise QuotaError(400, f"{param}: {part.strip()!r} is not key=value", "bad_request", param)
            if key not in IDENTITY_KEYS:
                raise QuotaError(
                    400, f"{param}: unknown key {key!r}: use {', '.join(IDENTITY_KEYS)}", "bad_request", param
                )
            if any(k == key for k, _ in entries):
                raise QuotaError(400, f"{param}: {key} is given twice", "bad_request", param)
            entries.append((key, value))
        return cls(tuple(entries))

    def values(self) -> dict[str, str]:
        return dict(self.entries)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.entries)


@dataclass
class ManagedQuota:
    """One limit for one subject, in the current period."""

    id: str  # "rateLimits/llm_gateway/group_id=marketing"
    subject: Subject
    counter: Counter  # this period's counter; counter.override names the override record
    configured: int  # the limit the source configures (before any override)
    unit: str  # what is counted: requests, tokens (a budget: its currency's smallest unit)
    period: str  # second ... year for a policy file's window
    shadow: bool = False  # counted, never refuses (shadow_mode)

    def labels(self) -> tuple[str, ...]:
        return gauge_labels(self.id, self.period, metric_unit(self.unit)[0], self.subject.entries)


class QuotaSource(Protocol):
    def find(self, subject: Subject, now: float) -> list[ManagedQuota]:
        """Every limit this source applies to exactly this subject, with this period's counter."""
        ...


def gauge_labels(quota: str, period: str, unit: str, entries: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    given = dict(entries)
    return (quota, period, unit, *(given.get(k, "") for k in IDENTITY_KEYS))


def metric_unit(unit: str) -> tuple[str, int]:
    """The unit label of a counter unit's gauges, and how many counter units make one of it."""
    return METRIC_UNITS.get(unit, (unit, 1))


# --- rateLimits files -------------------------------------------------------------------------


def file_limit_id(domain: str, match: Match) -> str:
    return f"rateLimits/{domain}/{match.limit.path}"


def file_counter_name(domain: str, match: Match) -> str:
    """A policy-file limit's counter name for these values, whatever the window (the stage
    remembers it per caller: it is the same for every request)."""
    return f"rl:{domain}_" + "_".join(f"{k}_{v}" for k, v in match.entries)


def file_counter(domain: str, match: Match, now: float, cost: int, name: str | None = None) -> Counter:
    """The counter of a policy-file limit for the request's (or the subject's) values now.

    The window's start is part of its key; the override key is the same name without it."""
    lim = match.limit
    start = int(now // lim.window) * lim.window
    name = name or file_counter_name(domain, match)
    return Counter(
        f"{name}_{start}",
        lim.requests_per_unit,
        cost,
        window_end=start + lim.window,
        enforce=not lim.shadow,
        override=f"ovr:{name}",
        cap=lim.tokens,  # a token estimate is at most the whole limit in force
    )


class FileLimits:
    """The quotas of the ``rateLimits`` files the routes use (as they are now: reloads count)."""

    def __init__(self, policies: Callable[[], Iterable[WatchedPolicy]]) -> None:
        self.policies = policies

    def find(self, subject: Subject, now: float) -> list[ManagedQuota]:
        out: dict[str, ManagedQuota] = {}
        values = subject.values()
        for watched in self.policies():
            policy = watched.current
            for m in policy.match(values):
                # The limit counting exactly this subject: its path uses every key the subject has.
                if m.limit.unlimited or len(m.entries) != len(subject.entries):
                    continue
                quota_id = file_limit_id(policy.domain, m)
                out[quota_id] = ManagedQuota(
                    quota_id,
                    subject,
                    file_counter(policy.domain, m, now, 1),
                    m.limit.requests_per_unit,
                    "tokens" if m.limit.tokens else "requests",
                    m.limit.unit,
                    m.limit.shadow,
                )
        return list(out.values())


# --- the operations -----------------------------------------------------------------------------


class Gauges(Protocol):
    def observe_quota(self, labels: tuple[str, ...], used: float, limit: float) -> None: ...

    def quota_series(self) -> list[tuple[str, ...]]: ...


class QuotaManager:
    def __init__(
        self,
        store: Store,
        sources: Sequence[QuotaSource],
        gauges: Gauges | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sources = sources
        self.gauges = gauges
        self.clock = clock

    def find(self, subject: Subject, quota: str | None, now: float) -> list[ManagedQuota]:
        found = [q for source in self.sources for q in source.find(subject, now)]
        if not found:
            raise QuotaError(404, f"subject: no quota applies to {subject}", "no_such_quota", "subject")
        if quota is None:
            return found
        chosen = [q for q in found if q.id == quota]
        if not chosen:
            names = ", ".join(q.id for q in found)
            raise QuotaError(404, f"quota: {quota!r} does not apply to {subject}; these do: {names}",
                             "no_such_quota", "quota")  # fmt: skip
        return chosen

    def one(self, subject: Subject, quota: str | None, now: float, unit: str | None = None) -> ManagedQuota:
        """The quota a change is for: ``quota`` may be left out when only one applies. A change in
        a given ``unit`` (dollars: ``usd_micros``) is for a quota counting that unit: among the
        subject's quotas, only those are candidates; a named quota counting another is an error."""
        found = self.find(subject, quota, now)
        if unit is not None:
            fitting = [q for q in found if q.unit == unit]
            if not fitting:
                names = ", ".join(f"{q.id} ({q.unit})" for q in found)
                raise QuotaError(400, f"quota: nothing of {subject} counts {unit}: {names}", "bad_request",
                                 "quota")  # fmt: skip
            found = fitting
        if len(found) > 1:
            names = ", ".join(q.id for q in found)
            raise QuotaError(400, f"quota: {subject} has several quotas, name one: {names}", "bad_request",
                             "quota")  # fmt: skip
        return found[0]

    async def read(self, subject: Subject, quota: str | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        quotas = self.find(subject, quota, now)
        return await self._report(quotas, now)

    async def set(
        self, subject: Subject, quota: str | None, limit: int | None, unit: str | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        q = self.one(subject, quota, now, unit)
        await self._store(self.store.set_override(q.counter.override, limit))
        return (await self._report([q], now))[0]

    async def adjust(
        self, subject: Subject, quota: str | None, delta: int, unit: str | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        q = self.one(subject, quota, now, unit)
        c = q.counter
        if delta > 0:  # charged whatever is left (enforce=False), creating the window if need be
            c.cost, c.enforce, c.cap = delta, False, False
            await self._store(self.store.reserve([c], now))
        elif delta < 0:
            await self._store(self.store.adjust([c], [delta], now))
        return (await self._report([q], now))[0]

    async def reset(self, subject: Subject, quota: str | None = None) -> list[dict[str, Any]]:
        """Every quota of the subject (or the one named) starts its period again."""
        now = self.clock()
        quotas = self.find(subject, quota, now)
        await self._store(self.store.reset([q.counter for q in quotas], now))
        return await self._report(quotas, now)

    async def refresh(self) -> int:
        """The gauges this process exports, read again from the store: usage settled after the
        last decision, other replicas' requests, a period that rolled over, a file's new limit.
        Returns how many were refreshed."""
        if self.gauges is None:
            return 0
        now = self.clock()
        quotas = []
        for labels in self.gauges.quota_series():
            quota, entries = (
                labels[0],
                tuple((k, v) for k, v in zip(IDENTITY_KEYS, labels[3:], strict=True) if v),
            )
            try:
                quotas += self.find(Subject(entries), quota, now)
            except QuotaError:
                continue  # gone from the file: its gauges keep their last values
        for i in range(0, len(quotas), REFRESH_BATCH):
            await self._report(quotas[i : i + REFRESH_BATCH], now)
        return len(quotas)

    async def refresh_forever(self, every: float = REFRESH_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except QuotaError as exc:  # the store is down: the next round tries again
                log.debug("quota gauges not refreshed: %s", exc.message)
            except Exception:  # the loop must outlive any one bad round
                log.exception("quota gauges not refreshed")

    async def _report(self, quotas: list[ManagedQuota], now: float) -> list[dict[str, Any]]:
        peeks = await self._store(self.store.peek([q.counter for q in quotas], now))
        out = []
        for q, p in zip(quotas, peeks, strict=True):
            row = describe(q, p, now)
            if self.gauges is not None:
                per = metric_unit(q.unit)[1]
                self.gauges.observe_quota(q.labels(), row["used"] / per, row["limit"] / per)
            out.append(row)
        return out

    @staticmethod
    async def _store(call: Any) -> Any:
        try:
            return await call
        except StoreUnavailable as exc:
            raise QuotaError(503, f"the limit store cannot be reached ({exc})", "store_unavailable") from None


def describe(q: ManagedQuota, p: Peek, now: float) -> dict[str, Any]:
    """A quota as the admin API reports it (after ``peek``: the counter holds the limit in force)."""
    c = q.counter
    if c.is_bucket:
        used, left = c.limit - p.level, p.level
        reset = 0.0 if left >= c.limit else (c.limit - left) / c.rate  # until it is full again
    else:
        used, left = p.level, c.limit - p.level
        reset = max(0.0, c.window_end - now)
    row: dict[str, Any] = {
        "quota": q.id,
        "subject": str(q.subject),
        "unit": q.unit,
        "period": q.period,
        "limit": c.limit,
        "configured": q.configured,
        "override": p.override,
        "used": _number(used),
        "remaining": _number(max(0.0, left)),
        "resets_in_seconds": math.ceil(reset),
        "period_end": _number(c.window_end) if c.window_end else None,
        "shadow": q.shadow,
    }
    if q.unit == USD_MICROS:  # the same in dollars, for people (micro-dollars are exact)
        for name in ("limit", "configured", "override", "used", "remaining"):
            value = row[name]
            row[f"{name}_usd"] = None if value is None else value / MICRO
    return row


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 3)
