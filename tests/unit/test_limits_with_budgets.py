"""A route with rate limits and budgets: the two stages' counters go in one store call, all or
nothing across them, in process and in a real Redis. A request the budgets refuse uses none of
its rate limits; one the rate limits refuse holds no dollars, not even while it is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc import gateway
from extproc.config.loader import parse_text
from extproc.config.model import GlobalConfig
from extproc.limits import budget_reply, quota
from extproc.limits.budget_reply import BudgetState
from extproc.limits.context import LimitsContext
from extproc.limits.redis_store import RedisStore
from extproc.limits.store import Counter, MemoryStore, Shared, Store
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.stage import Denied, Stage, request_side
from extproc.pipeline.stages import for_route
from extproc.telemetry import runtime
from extproc.telemetry.prices import Price
from extproc.translate.usage import Usage
from tests.redis_server import RedisServer, start_redis
from tests.unit.test_budgets import SlowStore  # decides at once, answers after a pause

HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100}
ALICE = {"api_key_id": "k-alice", "user_id": "alice", "group_id": "marketing"}
HELD = 1023  # micro-dollars a HI request reserves (tests/unit/test_budgets.py works it out)
USED = Usage(input_tokens=9, output_tokens=20)  # 223 micro-dollars
# Room for one held request and a settled one, not two held: 1023 + 223 fits, 1023 + 1023 does not.
BUDGET = "budgets:\n  - {group_id: marketing, period: day, usd: 0.0015}\n"
NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    before = runtime._current
    telemetry = runtime.Telemetry.build(GlobalConfig())
    telemetry.prices.replace({"gpt-4o": Price(2.5e-6, 1e-5)})
    runtime.install(telemetry)
    yield
    runtime._current = before


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class Counting:
    """The store, counting its reserve calls."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.reserves = 0
        self.in_process = store.in_process

    def reserve(self, counters: Any, now: float) -> Any:
        self.reserves += 1
        return self.inner.reserve(counters, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def governed(tmp: Path, store: Any, requests_per_minute: int, budget: str = BUDGET) -> list[Stage]:
    """The route's rate limit and budget stages, as the pipeline builds them: a request limit per
    user from a policy file, and the group's daily budget."""
    (tmp / "budgets.yaml").write_text(budget)
    (tmp / "ratelimits.yaml").write_text(
        "domain: lb\ndescriptors:\n  - key: user_id\n"
        f"    rate_limit: {{unit: minute, requests_per_unit: {requests_per_minute}}}\n"
    )
    route = {
        "name": "r",
        "matches": [{"path": {"pathPrefix": "/p"}}],
        "backends": [{"ai": {"name": "openai", "provider": {"openAI": {}}, "hostOverride": "127.0.0.1:9"}}],
        "policies": {
            "rateLimits": {"file": "ratelimits.yaml", "domain": "lb"},
            "budgets": {"file": "budgets.yaml"},
        },
    }
    config = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    gw = gateway.build(parse_text(yaml.safe_dump(config)).config)
    ctx = LimitsContext(gw, tmp, store=store)
    ctx.clock = lambda: NOW
    stages = [s for s in for_route(gw.routes[0], ctx) if s.name in ("rate_limit", "budget")]
    for s in stages:
        s.clock = lambda: NOW  # type: ignore[attr-defined]
    assert [s.name for s in stages] == ["rate_limit", "budget"]
    return stages


def exchange(stages: list[Stage], n: int) -> Exchange:
    route = stages[0].route  # type: ignore[attr-defined]
    ex = Exchange(f"req-{n}", route, "completions", "POST", "/p/v1/chat/completions")
    ex.llm = LLMRequest("completions", dict(HI))
    ex.identity = dict(ALICE)
    ex.upstream = route.direct_upstream
    return ex


async def ask(stages: list[Stage], ex: Exchange) -> str | None:
    """The request side as the router runs it: every on_request, then every decide. The refusal's
    code, or None when the request passes."""
    for s in stages:
        await s.on_request(ex)
    try:
        for s in stages:
            await s.decide(ex)
    except Denied as denied:
        return denied.code
    return None


async def complete(stages: list[Stage], ex: Exchange, usage: Usage | None, outcome: str) -> None:
    ex.usage, ex.outcome = usage, outcome
    for s in stages:
        await s.on_complete(ex)
    for s in stages:
        await s.drain()  # type: ignore[attr-defined]


def with_store(kind: str, redis_server: RedisServer) -> Any:
    if kind == "memory":
        return MemoryStore()
    return RedisStore(redis_server.url, key_prefix=f"lb{uuid.uuid4().hex}:")  # a test's own keys


async def used(store: Any, kind: str) -> int:
    """What the store counts in the windows of one kind: ``budget`` (micro-dollars) or ``rl``
    (the policy file's requests)."""
    inner = store.inner if isinstance(store, Counting) else store
    if isinstance(inner, MemoryStore):
        return sum(n for key, (n, _) in inner.windows.items() if key.startswith(kind + ":"))
    keys = await inner.client.keys(f"{inner.prefix}{kind}:*")
    return sum([int(await inner.client.get(key)) for key in keys])


async def budget_spent(store: Any) -> int:
    return await used(store, "budget")


STORES = ["memory", "redis"]


@pytest.mark.parametrize("kind", STORES)
def test_a_request_the_budgets_refuse_uses_none_of_its_rate_limits(
    kind: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async def run() -> list[str | None]:
        store = with_store(kind, redis_server)
        stages = governed(tmp_path, store, requests_per_minute=3)
        codes = []
        a = exchange(stages, 1)
        codes.append(await ask(stages, a))  # 1023 held, 2 requests left
        await complete(stages, a, USED, "ok")  # 223 spent
        b = exchange(stages, 2)
        codes.append(await ask(stages, b))  # 223 + 1023 held, 1 request left
        c = exchange(stages, 3)
        codes.append(await ask(stages, c))  # 1023 more does not fit the budget: still 1 request left
        await complete(stages, c, None, "denied")
        await complete(stages, b, USED, "ok")  # 446 spent
        d = exchange(stages, 4)
        codes.append(await ask(stages, d))  # the budget has room, and so has the rate limit
        await complete(stages, d, USED, "ok")
        e = exchange(stages, 5)
        codes.append(await ask(stages, e))  # now the rate limit is used up
        await complete(stages, e, None, "denied")
        await store.close()
        return codes

    assert asyncio.run(run()) == [None, None, "budget_exceeded", None, "rate_limit_exceeded"]


@pytest.mark.parametrize("kind", STORES)
def test_a_request_the_rate_limits_refuse_never_holds_dollars(
    kind: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async def run() -> list[Any]:
        store = Counting(with_store(kind, redis_server))
        # A budget with room for both: only the rate limit refuses the second request.
        stages = governed(tmp_path, store, 1, "budgets:\n  - {group_id: marketing, period: day, usd: 1}\n")
        seen: list[Any] = []
        a = exchange(stages, 1)
        seen.append(await ask(stages, a))
        b = exchange(stages, 2)
        seen.append(await ask(stages, b))
        seen.append(await budget_spent(store))  # refused, and not yet completed: only a's hold
        seen.append(store.reserves)  # one store call per request
        await complete(stages, b, None, "denied")
        await complete(stages, a, USED, "ok")
        seen.append(await budget_spent(store))
        await store.close()
        return seen

    assert asyncio.run(run()) == [None, "rate_limit_exceeded", HELD, 2, 223]


def test_a_stream_that_ends_while_the_rate_limits_wait_leaves_both_charged(tmp_path: Path) -> None:
    """The rate limit stage's decide is cancelled while it reads the one answer: what the store
    took is unknown, so neither stage gives anything back (the safe side for money), as one stage
    alone does when its stream ends while it waits."""
    store = SlowStore()
    stages = governed(tmp_path, store, requests_per_minute=5)

    async def run() -> tuple[int, int]:
        ex = exchange(stages, 1)
        for s in stages:
            await s.on_request(ex)
        task = asyncio.get_running_loop().create_task(stages[0].decide(ex))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await complete(stages, ex, None, "client_disconnected")
        return await budget_spent(store), await used(store, "rl")

    assert asyncio.run(run()) == (HELD, 1)


@pytest.mark.parametrize("kind", STORES)
def test_an_unpriced_model_uses_none_of_its_rate_limits_and_the_rate_limits_answer_first(
    kind: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async def run() -> list[str | None]:
        store = with_store(kind, redis_server)
        stages = governed(tmp_path, store, requests_per_minute=1)
        codes = []
        for body in ({**HI, "model": "no-such-model"}, HI, {**HI, "model": "no-such-model"}):
            ex = exchange(stages, len(codes))
            ex.llm = LLMRequest("completions", dict(body))
            codes.append(await ask(stages, ex))
            await complete(stages, ex, None if codes[-1] else USED, "denied" if codes[-1] else "ok")
        await store.close()
        return codes

    # Refused for its price, it took no request of the minute's one; over the limit, the rate
    # limit's 429 is the answer, as it was when the stages were asked one after the other.
    assert asyncio.run(run()) == ["model_not_priced", None, "rate_limit_exceeded"]


def test_each_stage_driven_alone_in_turn_still_works(tmp_path: Path) -> None:
    """request_side on one stage, then on the next (tests and benches do): the rate limits'
    answer is read before the budget stage adds, so the budget stage reserves on its own."""
    stages = governed(tmp_path, MemoryStore(), requests_per_minute=5)

    async def run() -> int:
        ex = exchange(stages, 1)
        for s in stages:
            await request_side(s, ex)
        await complete(stages, ex, USED, "ok")
        return await budget_spent(stages[0].store)  # type: ignore[attr-defined]

    assert asyncio.run(run()) == 223


def test_each_part_of_a_shared_call_gets_its_own_states_and_the_first_await_sends_it() -> None:
    store = Counting(MemoryStore())

    async def run() -> None:
        shared = Shared(store, NOW)
        first = shared.add([Counter("a", 10, 4, window_end=NOW + 60)])
        second = shared.add(
            [Counter("b", 5, 6, window_end=NOW + 60), Counter("c", 9, 1, window_end=NOW + 60)]
        )
        assert store.reserves == 0
        got_second = await second  # never sent by a stage: awaiting it sends it
        got_first = await first
        assert store.reserves == 1
        assert [s.fits for s in got_first.states] == [True]
        assert [s.fits for s in got_second.states] == [False, True]
        assert not got_first.taken and not got_second.taken  # b did not fit: nothing taken
        assert store.inner.windows == {}
        shared.send()  # already sent: nothing more
        assert store.reserves == 1
        with pytest.raises(RuntimeError):
            shared.add([Counter("d", 1, 1)])

    asyncio.run(run())


def test_a_refusal_whose_limits_all_seem_to_fit_is_still_a_429() -> None:
    """The store refused and every state says it fits (they should never disagree): the 429 names
    the limit with least left rather than failing the request with a 500."""
    refused = quota.refusal([quota.Quota("a", 10, 60, False, 3, 5), quota.Quota("b", 10, 60, False, 1, 7)])
    assert refused.status == 429 and "(b)" in refused.message
    over = budget_reply.refusal(
        [BudgetState("x day", 100, 50, 10, True, 60), BudgetState("y day", 100, 20, 10, True, 60)]
    )
    assert over.status == 429 and over.code == "budget_exceeded" and "y day" in over.message
