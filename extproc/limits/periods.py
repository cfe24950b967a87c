"""Budget periods on a calendar: a day, an ISO week (Monday first) or a calendar month, in an
IANA time zone (zoneinfo, with the ``tzdata`` package as the fallback database).

A period is named by the local date it starts on (``2026-03-01``): that name is part of the
counter's storage key, and the period's end is the counter's ``window_end``, so a new period is
a new counter (no reset job to forget) and a request always settles in the counter it reserved
in. Days are local days: the one a daylight saving change shortens has 23 hours.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("day", "week", "month")


@dataclass(frozen=True, slots=True)
class Period:
    name: str  # the local date it starts on, ISO: the counter key's part
    start: float  # Unix seconds
    end: float


class UnknownZone(ValueError):
    pass


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        hint = "use an IANA name such as UTC or Europe/Berlin"
        raise UnknownZone(f"unknown time zone {name!r}: {hint}") from None


def _first_day(kind: str, day: dt.date) -> dt.date:
    if kind == "day":
        return day
    if kind == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def _next(kind: str, first: dt.date) -> dt.date:
    if kind == "day":
        return first + dt.timedelta(days=1)
    if kind == "week":
        return first + dt.timedelta(days=7)
    return (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _midnight(day: dt.date, tz: ZoneInfo) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


# The current period per (kind, zone): working one out costs about 8 us, and every request asks.
_current: dict[tuple[str, ZoneInfo], Period] = {}


def period_of(kind: str, tz: ZoneInfo, now: float) -> Period:
    """The ``kind`` period (day, week, month) that ``now`` falls in, in ``tz``."""
    known = _current.get((kind, tz))
    if known is not None and known.start <= now < known.end:
        return known
    period = _compute(kind, tz, now)
    _current[(kind, tz)] = period
    return period


def _compute(kind: str, tz: ZoneInfo, now: float) -> Period:
    first = _first_day(kind, dt.datetime.fromtimestamp(now, tz).date())
    start, end = _midnight(first, tz), _midnight(_next(kind, first), tz)
    if now < start:  # a zone whose midnight falls in a DST gap: the local day began before it
        first = _first_day(kind, first - dt.timedelta(days=1))
        start, end = _midnight(first, tz), start
    return Period(first.isoformat(), start, end)
