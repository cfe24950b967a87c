"""The rate limit stage: a route's token buckets, policy-file limits and remote limits.

``on_request`` reserves before the provider is called, in one atomic store call for all of the
route's buckets and matching policy-file limits, sent without waiting (on a route with budgets,
with theirs: ``store.Shared``, all or nothing across both stages); ``decide`` takes the answer
once every stage has sent its own (then asks the remote service, if any): a request that does
not fit any of them is refused with a 429 and costs nothing. A request-count
limit costs 1; a token limit costs the request's estimate (``Exchange.estimated_tokens``: the
prompt plus the most the answer may use), at most the whole limit, so a request larger than a
limit still passes when that limit is untouched (agentgateway's 1-token bucket in the seeds
passes its first request). ``on_complete`` settles token limits with the usage the provider
reported, streams and cut-short exchanges included; with no usage, a request that got no answer
gives its reservation back, and one whose client left mid-way keeps it charged (the provider
may have done the work).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from extproc import tokens
from extproc.errors import GatewayError
from extproc.gateway import ResolvedRoute
from extproc.limits import managed, quota, values
from extproc.limits.policy_file import Match, PolicyFile
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.remote import RemoteAnswer, RemoteLimiter, RemoteUnavailable
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

log = logging.getLogger("gateway.limits")

# Outcomes where the provider answered (or may have): with no usage reported, the reservation stays.
_ANSWERED = ("ok", "client_disconnected", "stream_cut")
# Callers whose limits are kept worked out (RateLimitStage._known_for): more are forgotten and redone.
_NAMES_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class _Bucket:
    """A localRateLimit entry, worked out once: its key, rate and name."""

    key: str
    size: int
    rate: float
    tokens: bool
    what: str  # "localRateLimit[0] on route openai", with " (tokens)" for a token bucket
    window: float  # seconds to fill it from empty
    gauge: None = None  # no quota gauges: a bucket counts no subject


@dataclass(slots=True)
class _Known:
    """A policy-file limit as it counts one caller. Its name, description and gauge labels are
    the same for every request of that caller, so they are worked out once (until the file is
    reloaded), and its counter once per window, by ``managed.file_counter`` as the admin API
    builds it; each request gets a copy with its own cost."""

    match: Match
    name: str
    what: str  # "rateLimits llm: user_id > model", with " (tokens)" for a token limit
    gauge: tuple[str, ...]  # its quota metric labels
    tokens: bool
    window: float
    current: Counter | None = None  # this window's counter (its cost is no request's)

    def counter(self, domain: str, now: float, cost: int) -> Counter:
        c = self.current
        if c is None or not c.window_end - self.window <= now < c.window_end:
            c = self.current = managed.file_counter(domain, self.match, now, 1, self.name)
        return Counter(c.key, c.limit, cost, c.rate, c.window_end, c.enforce, c.override, c.cap)


@dataclass(slots=True)
class _Limit:
    """One counter this request touches, and what is known of its limit."""

    counter: Counter
    info: _Bucket | _Known

    def quota(self, s: State) -> quota.Quota:
        c, info = self.counter, self.info
        return quota.Quota(
            info.what, c.limit, info.window, c.is_bucket, s.remaining, s.reset, s.fits, s.retry_after, c.cost,
            info.tokens,
        )  # fmt: skip


@dataclass(slots=True)
class _Held:
    """What a request took, for decide and on_complete."""

    limits: list[_Limit]
    now: float  # when on_request reserved
    asked: Awaitable[Reservation] | None = None  # the store's answer, until decide takes it
    remote: RemoteAnswer | None = None
    prompt: int = 0


class RateLimitStage(Stage):
    name = "rate_limit"
    # The body for the estimate; the answer's headers and body for the usage that settles tokens.
    needs = Needs.REQUEST_BODY | Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY

    def __init__(
        self,
        route: ResolvedRoute,
        store: Store,
        *,
        fail_open: bool = False,
        policy: WatchedPolicy | None = None,
        remote: RemoteLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.store = store
        self.fail_open = fail_open  # the store's call: open only if every limit in it says so
        self.buckets = [
            _Bucket(
                f"lrl:{route.id}:{i}",
                b.max_tokens,
                b.rate,
                b.type == "tokens",
                f"localRateLimit[{i}] on route {route.id}" + (" (tokens)" if b.type == "tokens" else ""),
                b.max_tokens / b.rate,
            )
            for i, b in enumerate(route.policies.local_rate_limit or [])
        ]
        self.policy = policy
        self.remote = remote
        self.clock = clock
        # A budget stage follows on the route, on the same store (stages.for_route sets it): the
        # two stages' counters go in one call, all or nothing, which the budget stage sends.
        self.budget_follows = False
        # Settling with a networked store is sent off the request's path (the answer's last
        # bytes do not wait for it); these are the settlements still in flight.
        self._settling: set[asyncio.Task[None]] = set()
        # Per caller (its policy-file values): the limits that count it.
        self._known: dict[tuple[tuple[str, str], ...], list[_Known]] = {}
        self._known_of: PolicyFile | None = None

    async def on_request(self, ex: Exchange) -> None:
        now = self.clock()
        held = _Held(self._limits(ex, now, ex.estimated_tokens() or 0), now=now)
        if held.limits:  # sent now (or with the budgets' counters), answered in decide
            counters = [lim.counter for lim in held.limits]
            if self.budget_follows:
                shared = Shared(self.store, now)
                held.asked = shared.add(counters)
                ex.stage_state[SHARED] = shared
            else:
                held.asked = self.store.reserve(counters, now)
        ex.stage_state[self.name] = held

    async def decide(self, ex: Exchange) -> None:
        # Taken off the exchange until the decision is made: a refusal (or a stream ended
        # meanwhile, when what the store took is unknown) leaves on_complete nothing to settle.
        held: _Held | None = ex.stage_state.pop(self.name, None)
        if held is None:
            return
        quotas: list[quota.Quota] = []
        got = await self._answer(ex, held)
        if got is not None:
            quotas = self._quotas(ex, held.limits, got)
            # The gauges just after the decision, off the request's path: at the event
            # loop's next turn, once the request's task has gone on to build its answer.
            asyncio.get_running_loop().call_soon(_observe, held.limits, got)
            if not got.taken:
                if any(not q.fits for q in quotas):  # one of this stage's (enforced) limits
                    raise quota.refusal(quotas)
                # The budgets' counters in the same call did not fit: nothing was taken, the
                # budget stage refuses next (its 429 carries its own headers), and the remote
                # service is not asked.
                return
        if self.remote is not None:
            prompt = _prompt_tokens(ex)
            try:
                answer = await self.remote.check(ex, prompt)
            except RemoteUnavailable as exc:
                await self._give_back(held, held.now)
                self._unavailable(ex, "remoteRateLimit", exc, self.remote.fail_open)
                answer = None
            if answer is not None:
                quotas += answer.quotas
                if answer.over:
                    await self._give_back(held, held.now)
                    raise quota.refusal(quotas, answer.headers)
                held.remote, held.prompt = answer, prompt
                ex.response_headers.update(answer.headers)
        ex.response_headers.update(quota.headers(quotas))
        ex.stage_state[self.name] = held

    async def _answer(self, ex: Exchange, held: _Held) -> Reservation | None:
        """The store's answer to the reservation on_request sent (None: none was sent, or the
        store failed and failOpen lets the request pass untracked)."""
        asked, held.asked = held.asked, None
        if asked is None:
            return None
        try:
            return await asked
        except StoreUnavailable as exc:
            held.limits = []  # failOpen: the request passes untracked
            self._unavailable(ex, "the rate limit store", exc, self.fail_open)
            return None

    def _limits(self, ex: Exchange, now: float, estimate: int) -> list[_Limit]:
        out = []
        for b in self.buckets:
            cost = _cost(estimate, b.size) if b.tokens else 1
            out.append(_Limit(Counter(b.key, b.size, cost, b.rate), b))
        if self.policy is not None:
            policy = self.policy.current
            for k in self._known_for(policy, values.identity_values(ex)):
                cost = _cost(estimate, k.match.limit.requests_per_unit) if k.tokens else 1
                # With its override key: an operator's limit for this subject wins (managed.py).
                out.append(_Limit(k.counter(policy.domain, now, cost), k))
        return out

    def _known_for(self, policy: PolicyFile, found: dict[str, str]) -> list[_Known]:
        """The policy-file limits that count this caller (not the ``unlimited`` ones)."""
        if policy is not self._known_of:
            self._known.clear()
            self._known_of = policy
        key = tuple(found.items())
        known = self._known.get(key)
        if known is None:
            if len(self._known) >= _NAMES_KEPT:  # callers come and go: start again, not grow
                self._known.clear()
            known = [_learn(policy, m) for m in policy.match(found) if not m.limit.unlimited]
            self._known[key] = known
        return known

    def _quotas(self, ex: Exchange, limits: list[_Limit], got: Reservation) -> list[quota.Quota]:
        """What the client is told: shadow-mode limits count but are never shown (nor refuse)."""
        out = []
        for lim, state in zip(limits, got.states, strict=True):
            if lim.counter.enforce:
                out.append(lim.quota(state))
            elif not state.fits:
                log.info("shadow mode: %s would refuse request %s", lim.info.what, ex.request_id)
        return out

    def _unavailable(self, ex: Exchange, what: str, exc: Exception, fail_open: bool) -> None:
        if fail_open:
            log.warning("%s is unavailable (%s): request %s passes (failOpen)", what, exc, ex.request_id)
            return
        log.error("%s is unavailable (%s): request %s refused (failClosed)", what, exc, ex.request_id)
        raise GatewayError(
            503, "the gateway cannot check rate limits right now", code="rate_limit_unavailable"
        )

    async def on_complete(self, ex: Exchange) -> None:
        held: _Held | None = ex.stage_state.pop(self.name, None)
        if held is None:
            return
        if held.asked is not None and not await was_taken(held.asked):  # refused before decide
            return
        used = None if ex.usage is None else ex.usage.total_tokens
        deltas = []
        for lim in held.limits:
            if not lim.info.tokens:
                deltas.append(0)
            elif used is not None:
                deltas.append(used - lim.counter.cost)
            elif ex.outcome in _ANSWERED:
                deltas.append(0)  # answered without usage, or the client left: it stays charged
            else:
                deltas.append(-lim.counter.cost)  # no answer: nothing was used
        if any(deltas):
            settle = self._settle(ex.request_id, [lim.counter for lim in held.limits], deltas, self.clock())
            if self.store.in_process:
                await settle  # no I/O: done before the next request can look
            else:
                self._background(settle)
        if held.remote is not None and used is not None and self.remote is not None:
            self._background(self.remote.amend(held.remote, used - held.prompt))

    async def _settle(self, request_id: str, counters: list[Counter], deltas: list[int], now: float) -> None:
        try:
            await self.store.adjust(counters, deltas, now)
        except StoreUnavailable as exc:
            log.error("rate limits: settling request %s failed: %s", request_id, exc)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Waits for the settlements in flight (at shutdown, and in tests)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    async def _give_back(self, held: _Held, now: float) -> None:
        """A later check refused the request (or failed): what the store took goes back."""
        if not held.limits:
            return
        counters = [lim.counter for lim in held.limits]
        try:
            await self.store.adjust(counters, [-c.cost for c in counters], now)
        except StoreUnavailable as exc:
            log.error("rate limits: giving back a refused request's reservation failed: %s", exc)
        held.limits = []


def _observe(limits: list[_Limit], got: Reservation) -> None:
    """The quota metrics of the policy-file limits, as this decision found them."""
    metrics = runtime.current().metrics
    for lim, state in zip(limits, got.states, strict=True):
        gauge = lim.info.gauge
        if gauge is not None:
            metrics.observe_quota(gauge, lim.counter.limit - state.remaining, lim.counter.limit)


def _learn(policy: PolicyFile, m: Match) -> _Known:
    lim = m.limit
    unit = "tokens" if lim.tokens else "requests"
    return _Known(
        m,
        managed.file_counter_name(policy.domain, m),
        f"rateLimits {policy.domain}: {lim.path}" + (" (tokens)" if lim.tokens else ""),
        managed.gauge_labels(managed.file_limit_id(policy.domain, m), lim.unit, unit, m.entries),
        lim.tokens,
        lim.window,
    )


def _cost(estimate: int, limit: int) -> int:
    """At least 1 (a limit used up, or in debt, refuses everything), at most the whole limit."""
    return max(1, min(estimate, limit))


def _prompt_tokens(ex: Exchange) -> int:
    if ex.llm is None:
        return 0
    return tokens.estimate_prompt_tokens(ex.api, ex.llm.body, values.model_of(ex) or "")
