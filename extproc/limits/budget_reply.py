"""What a client is told about its budgets: the x-budget headers and the refusal.

- ``x-budget-limit``: the most constrained budget's dollars per period (``5``, ``0.25``);
- ``x-budget-remaining``: what is left of it while this request's reservation is held
  (never negative);
- ``x-budget-reset``: seconds until its period ends and a new one starts;
- ``x-budget-scope``: which budget that is (``group_id=marketing month``).

Over budget is a **429** with the code ``budget_exceeded`` in the client API's error shape (as
LiteLLM's budget limiter and OpenAI's ``insufficient_quota`` answer: the status clients already
treat as "not now"), ``retry-after`` set to the period's end, and ``x-should-retry: false``,
which the OpenAI and Anthropic SDKs honour: waiting seconds will not help when the budget is
spent until next month.
"""

from __future__ import annotations

from dataclasses import dataclass

from extproc.limits.budget_file import MICRO
from extproc.limits.store import whole_seconds
from extproc.pipeline.stage import Denied


@dataclass(slots=True)
class BudgetState:
    what: str  # "group_id=marketing month"
    limit: int  # micro-dollars
    remaining: float  # micro-dollars, after this request's reservation when it was taken
    reset: float  # seconds to the period's end
    fits: bool
    cost: int  # this request's reservation, micro-dollars


def usd(micro_dollars: float) -> str:
    """Dollars to the micro-dollar, without trailing zeros: ``5``, ``0.000125``."""
    text = f"{max(0.0, micro_dollars) / MICRO:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def headers(states: list[BudgetState], refused: BudgetState | None = None) -> dict[str, str]:
    if not states:
        return {}
    worst = refused or min(states, key=lambda s: s.remaining)
    out = {
        "x-budget-limit": usd(worst.limit),
        "x-budget-remaining": usd(worst.remaining),
        "x-budget-reset": str(whole_seconds(worst.reset)),
        "x-budget-scope": worst.what,
    }
    if refused is not None:
        out["retry-after"] = str(max(1, whole_seconds(refused.reset)))
        out["x-should-retry"] = "false"
    return out


def refusal(states: list[BudgetState]) -> Denied:
    """The 429 for the budget that refused: the one whose period ends last (the longest wait)."""
    # (Every state fits only if the store's answer and ours disagree: the one with least left.)
    over = [s for s in states if not s.fits] or [min(states, key=lambda s: s.remaining)]
    refused = max(over, key=lambda s: s.reset)
    message = (
        f"budget exceeded ({refused.what}: ${usd(refused.limit)}): this request may cost up to "
        f"${usd(refused.cost)} and ${usd(refused.remaining)} is left; the budget renews in "
        f"{whole_seconds(refused.reset)} s (x-budget-reset)"
    )
    return Denied(429, message, code="budget_exceeded", headers=headers(states, refused))


def unpriced(model: str) -> Denied:
    """A budget applies and the model has no price: the gateway does not guess one."""
    return Denied(
        403,
        f"model {model!r} has no price in the gateway's price table, and a budget applies to this "
        f"caller: ask the operator to price it (prices.json) or set defaults.unpricedUsd",
        code="model_not_priced",
    )
