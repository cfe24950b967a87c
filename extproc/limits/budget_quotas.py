"""Dollar budgets as managed quotas: their counters, shared by the budget stage and the admin API.

A budget's counter for one caller and period is ``budget:<scope>=<value>:<period>:<start>``
(``budget:group_id=marketing:month:2026-12-01``): the period's local start date in the key, so
a new period is a new counter. Its override record is the same name without the start
(``ovr:budget:group_id=marketing:month``): an operator's limit for this caller holds for the
current period and every later one, until cleared, whatever the budgets file says meanwhile.

A ``"*"`` budget (every caller their own) is one counter per caller, so it is managed per
subject like any other: ``api_key_id=key-1`` has its own override, usage and reset.

As the admin API names them: the quota ``budget/<scope>/<period>`` (``budget/group_id/month``)
of the subject ``<scope>=<value>``; the unit ``usd_micros``. A subject with no budget in the
files has none to manage (404): a new budget is written in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from extproc.limits.budget_file import SCOPES, Budget, BudgetFile
from extproc.limits.managed import USD_MICROS, ManagedQuota, Subject, gauge_labels
from extproc.limits.periods import period_of
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.store import Counter


def quota_id(budget: Budget) -> str:
    return f"budget/{budget.scope}/{budget.period}"


def counter_name(budget: Budget, value: str) -> str:
    """The counter's name for this caller, whatever the period (its override's, after ``ovr:``)."""
    return f"budget:{budget.scope}={value}:{budget.period}"


def counter(budget: Budget, value: str, cost: int, now: float, name: str | None = None) -> Counter:
    """The counter of ``budget`` for the caller's ``value`` in the period ``now`` falls in."""
    period = period_of(budget.period, budget.tz, now)
    name = name or counter_name(budget, value)
    return Counter(f"{name}:{period.name}", budget.limit, cost, window_end=period.end, override=f"ovr:{name}")


def gauge(budget: Budget, value: str) -> tuple[str, ...]:
    """The labels of the budget's gauges for this caller (quota gauges, in dollars)."""
    return gauge_labels(quota_id(budget), budget.period, "usd", ((budget.scope, value),))


class BudgetQuotas:
    """The budgets of the files the routes use (as they are now: reloads count)."""

    def __init__(self, files: Callable[[], Iterable[WatchedPolicy[BudgetFile]]]) -> None:
        self.files = files

    def find(self, subject: Subject, now: float) -> list[ManagedQuota]:
        if len(subject.entries) != 1 or subject.entries[0][0] not in SCOPES:
            return []  # a budget counts one key, user or group
        scope, value = subject.entries[0]
        out: dict[str, ManagedQuota] = {}
        for watched in self.files():
            for budget, _ in watched.current.match({scope: value}):
                qid = quota_id(budget)
                # Two files with the same budget share its counter (its key names no file): one quota.
                out[qid] = ManagedQuota(
                    qid, subject, counter(budget, value, 1, now), budget.limit, USD_MICROS, budget.period
                )
        return list(out.values())
