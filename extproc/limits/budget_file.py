"""A ``budgets`` policy file: dollar budgets per API key, user and group over calendar periods.

The format (policies/budgets.yaml; README "Budgets")::

    timeZone: Europe/Berlin        # the periods' calendar (IANA name); UTC when unset
    defaults:
      maxTokens: 4096              # output tokens reserved for a request that sets no max_tokens
      unpricedUsd: 0.02            # charged per request to a model the price table lacks
    budgets:
      - group_id: marketing        # exactly one of api_key_id, user_id, group_id
        period: month              # day, week (Monday first) or month (calendar)
        usd: 500
      - api_key_id: "*"            # "*": every key its own budget
        period: day
        usd: 5
        timeZone: America/New_York # this budget's own calendar

A request is held to every budget its identity matches (its key's, its user's and its group's:
all must have room). For each key, budgets naming the caller's value replace the ``"*"`` ones.
Without ``unpricedUsd``, a request to a model the price table does not price is refused while
a budget applies: the gateway never guesses a price (``unpricedUsd: 0`` lets such models pass
free, by the operator's choice). Unknown fields are errors naming file, line and field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from extproc import tokens
from extproc.config.loader import ConfigError, ConfigIssue, field_path, nearest_line, read_yaml
from extproc.limits.periods import PERIODS, UnknownZone, zone

Loc = tuple[str | int, ...]
SCOPES = ("api_key_id", "user_id", "group_id")
MICRO = 1_000_000  # counters hold micro-dollars: integers, as the stores' counters are
MAX_USD = 1_000_000_000
_TOP = {"timeZone", "defaults", "budgets"}
_DEFAULTS = {"maxTokens", "unpricedUsd"}
_ENTRY = {*SCOPES, "period", "usd", "timeZone"}


def micro(usd: float) -> int:
    """Whole micro-dollars, rounded up: a reservation is never below the cost it stands for."""
    return max(0, math.ceil(round(usd * MICRO, 6)))


@dataclass(frozen=True)
class Budget:
    scope: str  # api_key_id, user_id or group_id
    value: str  # the caller's value, or "*" (each value its own counter)
    period: str  # day, week, month
    limit: int  # micro-dollars
    tz: ZoneInfo
    line: int | None = None

    def describe(self, value: str) -> str:
        return f"{self.scope}={value} {self.period}"


@dataclass(frozen=True)
class Defaults:
    max_tokens: int = tokens.DEFAULT_MAX_OUTPUT_TOKENS
    unpriced: int | None = None  # micro-dollars; None: refuse requests to unpriced models


@dataclass
class BudgetFile:
    defaults: Defaults = field(default_factory=Defaults)
    exact: dict[tuple[str, str], list[Budget]] = field(default_factory=dict)
    each: dict[str, list[Budget]] = field(default_factory=dict)

    def match(self, identity: dict[str, str]) -> list[tuple[Budget, str]]:
        """Every budget the caller is held to, with the value its counter is kept under."""
        out: list[tuple[Budget, str]] = []
        for scope in SCOPES:
            value = identity.get(scope)
            if not value:
                continue
            found = self.exact.get((scope, value))
            out += [(b, value) for b in (found if found is not None else self.each.get(scope, ()))]
        return out

    def __len__(self) -> int:
        return sum(map(len, self.exact.values())) + sum(map(len, self.each.values()))


class _Reader:
    def __init__(self, file: str, lines: dict[Loc, int]) -> None:
        self.file = file
        self.lines = lines
        self.issues: list[ConfigIssue] = []

    def problem(self, loc: Loc, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, nearest_line(self.lines, loc), field_path(loc), message))

    def unknown(self, data: dict[str, Any], known: set[str], loc: Loc) -> None:
        for k in data:
            if k not in known:
                self.problem((*loc, k), f"unknown field {k!r} (known: {', '.join(sorted(known))})")

    def zone(self, value: Any, loc: Loc, default: ZoneInfo) -> ZoneInfo:
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(loc, "a time zone is an IANA name (a string)")
            return default
        try:
            return zone(value)
        except UnknownZone as exc:
            self.problem(loc, str(exc))
            return default

    def usd(self, value: Any, loc: Loc) -> int | None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            self.problem(loc, "a dollar amount is a number, 0 or more")
            return None
        if value > MAX_USD:  # micro-dollars stay exact in Redis's Lua numbers (doubles) below 2^53
            self.problem(loc, f"a dollar amount is at most {MAX_USD:,}")
            return None
        return micro(float(value))


def parse_budgets(text: str, file: str) -> BudgetFile:
    """The file's budgets; ConfigError naming file, line and field for every problem."""
    data, lines = read_yaml(text, file)
    r = _Reader(file, lines)
    if not isinstance(data, dict):
        shape = "a budgets file is a mapping: timeZone, defaults, budgets"
        raise ConfigError([ConfigIssue(file, 1, "", shape)])
    r.unknown(data, _TOP, ())
    tz = r.zone(data.get("timeZone"), ("timeZone",), zone("UTC"))
    out = BudgetFile(_defaults(r, data.get("defaults")))
    entries = data.get("budgets")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        r.problem(("budgets",), "budgets is a list")
        entries = []
    seen: set[tuple[str, str, str]] = set()
    for i, entry in enumerate(entries):
        budget = _entry(r, entry, ("budgets", i), tz)
        if budget is None:
            continue
        key = (budget.scope, budget.value, budget.period)
        if key in seen:
            r.problem(("budgets", i), f"duplicate budget: {budget.scope}={budget.value} per {budget.period}")
            continue
        seen.add(key)
        if budget.value == "*":
            out.each.setdefault(budget.scope, []).append(budget)
        else:
            out.exact.setdefault((budget.scope, budget.value), []).append(budget)
    if r.issues:
        raise ConfigError(r.issues)
    return out


def _defaults(r: _Reader, data: Any) -> Defaults:
    if data is None:
        return Defaults()
    if not isinstance(data, dict):
        r.problem(("defaults",), "defaults is a mapping: maxTokens, unpricedUsd")
        return Defaults()
    r.unknown(data, _DEFAULTS, ("defaults",))
    max_tokens = data.get("maxTokens", tokens.DEFAULT_MAX_OUTPUT_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        r.problem(("defaults", "maxTokens"), "maxTokens is a whole number, 1 or more")
        max_tokens = tokens.DEFAULT_MAX_OUTPUT_TOKENS
    unpriced = None
    if data.get("unpricedUsd") is not None:
        unpriced = r.usd(data["unpricedUsd"], ("defaults", "unpricedUsd"))
    return Defaults(max_tokens, unpriced)


def _entry(r: _Reader, entry: Any, loc: Loc, tz: ZoneInfo) -> Budget | None:
    if not isinstance(entry, dict):
        r.problem(loc, "each budget is a mapping: one of api_key_id, user_id, group_id; period; usd")
        return None
    r.unknown(entry, _ENTRY, loc)
    scopes = [s for s in SCOPES if s in entry]
    if len(scopes) != 1:
        r.problem(loc, f"a budget names exactly one of {', '.join(SCOPES)} (found {len(scopes)})")
        return None
    scope = scopes[0]
    value = entry[scope]
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        r.problem((*loc, scope), f'{scope} is the caller\'s value, or "*" for each caller')
        return None
    period = entry.get("period")
    if period not in PERIODS:
        r.problem((*loc, "period"), f"period is one of {', '.join(PERIODS)} (found {period!r})")
        return None
    if "usd" not in entry:
        r.problem((*loc, "usd"), "a budget needs usd: the most it may spend per period")
        return None
    limit = r.usd(entry["usd"], (*loc, "usd"))
    if limit is None:
        return None
    own_tz = r.zone(entry.get("timeZone"), (*loc, "timeZone"), tz)
    return Budget(scope, str(value), period, limit, own_tz, nearest_line(r.lines, loc))
