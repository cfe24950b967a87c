"""The budget stage: dollar budgets per API key, user and group, reserved then settled.

``on_request`` reserves the request's most likely-highest cost in every budget the caller is
held to, in one atomic store call sent without waiting, whose answer ``decide`` takes (all must
have room, or nothing is taken and the answer is a 429): the prompt estimate at the input price
plus ``max_tokens`` (or ``defaults.maxTokens`` when the request sets none) at the output price,
from the price table. On a route with several providers, the dearest of them. Counters are
micro-dollars in the store's fixed windows, one per budget and period (the period's local start
date in the key, its end the window's end), each with its override record, which the admin API
sets (extproc/limits/budget_quotas.py): read in the same atomic step, so a changed budget holds
from the next request on, on every replica.
Each decision sets the budget's quota gauges (in dollars).

``on_complete`` settles the same counters (the period the request reserved in, even when it ends
after a boundary) with what the answer cost:

- usage reported and priced: its cost, whatever the outcome (a cut stream's partial usage too);
- usage reported for a model without a price: ``defaults.unpricedUsd`` (else the reservation);
- no usage, and the client got an answer (``ok``, ``stream_cut``): the reservation stays charged,
  as the provider bills what it generated and the reservation is its upper bound;
- no usage and no answer (provider or gateway error, client gone before the answer): released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from extproc import tokens
from extproc.errors import GatewayError
from extproc.gateway import ResolvedRoute, Upstream
from extproc.limits import budget_quotas, budget_reply, values
from extproc.limits.budget_file import MICRO, Budget, BudgetFile, Defaults, micro
from extproc.limits.budget_reply import BudgetState
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.store import (
    SHARED,
    Counter,
    Reservation,
    Shared,
    State,
    Store,
    StoreUnavailable,
    was_taken,
)
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Needs, Stage
from extproc.telemetry import runtime
from extproc.telemetry.prices import Price, cost_usd
from extproc.translate.usage import Usage

log = logging.getLogger("gateway.limits")

_ANSWERED = ("ok", "stream_cut")
# Callers whose budgets' names are kept (BudgetStage._named): more are forgotten and redone.
_NAMES_KEPT = 10_000


@dataclass(slots=True)
class _Held:
    counters: list[Counter]
    reserved: int  # micro-dollars, in each counter
    unpriced: int | None  # the file's unpricedUsd when the reservation was taken
    named: list[tuple[str, str, tuple[str, ...]]]  # each budget's counter name, description, gauge
    asked: Awaitable[Reservation] | None  # the store's answer, until decide takes it


@dataclass(slots=True)
class _Unpriced:
    """No provider's model is priced and unpricedUsd is unset: decide refuses (nothing reserved)."""

    model: str


class BudgetStage(Stage):
    name = "budget"
    # The body for the estimate; the answer's usage to settle with.
    needs = Needs.REQUEST_BODY | Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY

    def __init__(
        self,
        route: ResolvedRoute,
        store: Store,
        policy: WatchedPolicy[BudgetFile],
        *,
        fail_open: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.store = store
        self.policy = policy
        self.fail_open = fail_open
        self.clock = clock
        direct = route.direct_upstream
        # Who may answer: the reservation is priced for the dearest of them.
        self.upstreams: list[Upstream] = (
            [direct] if direct is not None else [u for b in route.backends for u in b.upstreams]
        )
        self._settling: set[asyncio.Task[None]] = set()
        self._names: dict[tuple[Budget, str], tuple[str, str, tuple[str, ...]]] = {}
        self._names_of: BudgetFile | None = None

    async def on_request(self, ex: Exchange) -> None:
        # The rate limits' counters, when that stage came first: this stage's go in the same
        # call, which is sent as this method ends, whether or not this request reserves.
        shared: Shared | None = ex.stage_state.pop(SHARED, None)
        if shared is not None and shared.sent:  # the rate limits' answer was read already
            shared = None
        try:
            self._reserve(ex, shared)
        finally:
            if shared is not None:
                shared.send()

    def _reserve(self, ex: Exchange, shared: Shared | None) -> None:
        if ex.llm is None:  # models lists, passthrough: nothing is generated or priced
            return
        file = self.policy.current
        budgets = file.match(values.identity_values(ex))
        if not budgets:
            return
        cost = self._reservation(ex, file.defaults)
        if cost is None:  # refused in decide: a rate limit's refusal, answered first, comes first
            ex.stage_state[self.name] = _Unpriced(values.model_of(ex) or "")
            if shared is not None:
                shared.refuse()  # and the rate limits take nothing for it
            return
        now = self.clock()
        named = [self._named(file, b, value) for b, value in budgets]
        counters = [
            budget_quotas.counter(b, v, cost, now, n[0]) for (b, v), n in zip(budgets, named, strict=True)
        ]
        # Sent now, answered in decide; on a route with rate limits too, in their call.
        asked = shared.add(counters) if shared is not None else self.store.reserve(counters, now)
        ex.stage_state[self.name] = _Held(counters, cost, file.defaults.unpriced, named, asked)

    async def decide(self, ex: Exchange) -> None:
        # Taken off the exchange until the decision is made: a refusal, a failed store (nothing
        # taken) or a stream ended meanwhile (what was taken is unknown, so it stays charged)
        # leaves on_complete nothing to settle.
        held: _Held | _Unpriced | None = ex.stage_state.pop(self.name, None)
        if isinstance(held, _Unpriced):
            ex.budget = {"decision": "unpriced"}
            raise budget_reply.unpriced(held.model)
        if held is None or held.asked is None:
            return
        try:
            got = await held.asked
        except StoreUnavailable as exc:
            self._unavailable(ex, exc)
            return
        held.asked = None
        cost, named, counters = held.reserved, held.named, held.counters
        states = [
            BudgetState(n[1], c.limit, s.remaining, s.reset, s.fits, cost)
            for n, c, s in zip(named, counters, got.states, strict=True)
        ]
        record: dict[str, Any] = {
            "budgets": [s.what for s in states],
            "reserved_usd": cost / 1e6,
        }
        # The gauges just after the decision, off the request's path (the rate limit stage's way).
        asyncio.get_running_loop().call_soon(_observe, named, counters, got.states)
        if not got.taken:
            ex.budget = {"decision": "deny", **record}
            raise budget_reply.refusal(states)
        ex.budget = {"decision": "allow", **record}
        ex.response_headers.update(budget_reply.headers(states))
        ex.stage_state[self.name] = held

    def _named(self, file: BudgetFile, budget: Budget, value: str) -> tuple[str, str, tuple[str, ...]]:
        """A budget's counter name, description and gauge labels for one caller: the same for
        every request, so worked out once per caller (until the file is reloaded)."""
        if file is not self._names_of:
            self._names.clear()
            self._names_of = file
        key = (budget, value)
        found = self._names.get(key)
        if found is None:
            if len(self._names) >= _NAMES_KEPT:  # callers come and go: start again, not grow
                self._names.clear()
            found = self._names[key] = (
                budget_quotas.counter_name(budget, value),
                budget.describe(value),
                budget_quotas.gauge(budget, value),
            )
        return found

    def _reservation(self, ex: Exchange, defaults: Defaults) -> int | None:
        """Micro-dollars to hold; None when no provider's model is priced and unpricedUsd is unset."""
        assert ex.llm is not None
        limit, choices = tokens.output_limit(ex.api, ex.llm.body)
        estimate = ex.estimated_tokens() or 0
        prompt = max(0, estimate - (tokens.DEFAULT_MAX_OUTPUT_TOKENS if limit is None else limit) * choices)
        output = (defaults.max_tokens if limit is None else limit) * choices
        usage = Usage(input_tokens=prompt, output_tokens=output)
        best = None
        for price in self._prices(ex):
            cost = max(1, micro(cost_usd(usage, price)))  # a spent budget refuses every request
            best = cost if best is None else max(best, cost)
        return best if best is not None else defaults.unpriced

    def _prices(self, ex: Exchange) -> list[Price]:
        table = runtime.current().prices
        found = []
        for up in self.upstreams:
            model = up.model or ex.request_model
            hit = table.find(model, up.kind) if model else None
            if hit is not None:
                found.append(hit[1])
        return found

    def _unavailable(self, ex: Exchange, exc: Exception) -> None:
        if self.fail_open:
            ex.budget = {"decision": "fail_open"}
            log.warning("budgets: the store is unavailable (%s): request %s passes (failOpen)",
                        exc, ex.request_id)  # fmt: skip
            return
        ex.budget = {"decision": "fail_closed"}
        log.error("budgets: the store is unavailable (%s): request %s refused (failClosed)",
                  exc, ex.request_id)  # fmt: skip
        raise GatewayError(503, "the gateway cannot check budgets right now", code="budget_unavailable")

    async def on_complete(self, ex: Exchange) -> None:
        held: _Held | _Unpriced | None = ex.stage_state.pop(self.name, None)
        if not isinstance(held, _Held):
            return
        if held.asked is not None and not await was_taken(held.asked):  # refused before decide
            return
        charged = self._charge(ex, held)
        if ex.budget is not None:
            ex.budget["charged_usd"] = charged / 1e6
        delta = charged - held.reserved
        if not delta:
            return
        settle = self._settle(ex.request_id, held.counters, delta, self.clock())
        if self.store.in_process:
            await settle  # no I/O: settled before the next request can look
        else:
            self._background(settle)

    def _charge(self, ex: Exchange, held: _Held) -> int:
        if ex.usage is not None:
            cost = runtime.current().cost_of(ex)
            if cost.usd is not None:
                return micro(cost.usd)
            return held.reserved if held.unpriced is None else held.unpriced
        if ex.outcome in _ANSWERED:
            return held.reserved
        return 0

    async def _settle(self, request_id: str, counters: list[Counter], delta: int, now: float) -> None:
        try:
            await self.store.adjust(counters, [delta] * len(counters), now)
        except StoreUnavailable as exc:
            log.error("budgets: settling request %s failed: %s", request_id, exc)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Waits for the settlements in flight (at shutdown, and in tests)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)


def _observe(
    named: list[tuple[str, str, tuple[str, ...]]], counters: list[Counter], states: Sequence[State]
) -> None:
    """The budgets' gauges as this decision found them (the limit in force: an override too)."""
    metrics = runtime.current().metrics
    for n, c, state in zip(named, counters, states, strict=True):
        used = c.limit - state.remaining
        metrics.observe_quota(n[2], used / MICRO, c.limit / MICRO)
