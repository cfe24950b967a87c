"""What managing quotas adds to the limit stores (override records, peek, reset, adding and taking
back usage), held to the same tests on the in-process store and a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from extproc.limits.redis_store import RedisStore
from extproc.limits.store import Counter, Store
from tests.redis_server import RedisServer
from tests.unit import test_limit_store as base
from tests.unit.test_limit_store import NOW, Body, bucket, window

# The same fixtures: a fresh store of each kind, and one redis-server for the module.
with_store = base.with_store
redis_server = base.redis_server


def ow(key: str = "w", limit: int = 10, cost: int = 1, **kw: object) -> Counter:
    """A window with an override record (as the rate limit stage builds one per subject)."""
    return window(key, limit=limit, cost=cost, override="o:" + key, **kw)


def ob(key: str = "b", size: int = 10, cost: int = 1, **kw: object) -> Counter:
    c = bucket(key, size=size, cost=cost)
    c.override = "o:" + key
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_an_override_lowers_a_window_from_the_next_reservation(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        for _ in range(3):
            assert (await store.reserve([ow()], NOW)).taken
        await store.set_override("o:w", 4)
        c = ow()
        got = await store.reserve([c], NOW)
        assert got.taken and c.limit == 4 and got.states[0].remaining == 0  # the 3 used count against 4
        refused = await store.reserve([ow()], NOW)
        assert not refused.taken
        # A counter without the override key is not affected (another subject's, say).
        assert (await store.reserve([window("w")], NOW)).taken
        await store.set_override("o:w", None)  # cleared: the caller's limit again
        c = ow()
        assert (await store.reserve([c], NOW)).taken and c.limit == 10

    with_store(body)


def test_an_override_survives_the_window_it_was_set_in(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        await store.set_override("o:next", 1)
        first = window("w:1", override="o:next", end=NOW + 120)
        assert (await store.reserve([first], NOW + 61)).taken
        assert not (await store.reserve([window("w:1", override="o:next", end=NOW + 120)], NOW + 61)).taken

    with_store(body)


def test_a_raised_override_lets_more_through_and_caps_token_costs(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        await store.set_override("o:w", 20)
        assert all([(await store.reserve([ow()], NOW)).taken for _ in range(20)])
        assert not (await store.reserve([ow()], NOW)).taken
        # A token estimate is at most the whole limit in force: an untouched lowered limit
        # still passes one large request, as an untouched file limit does.
        await store.set_override("o:t", 50)
        c = ow("t", limit=1000, cost=1000, cap=True)
        got = await store.reserve([c], NOW)
        assert got.taken and c.cost == 50 and got.states[0].remaining == 0
        uncapped = ow("u", limit=1000, cost=60)
        await store.set_override("o:u", 50)
        assert not (await store.reserve([uncapped], NOW)).taken and uncapped.cost == 60

    with_store(body)


def test_an_override_on_a_bucket_resizes_it_and_scales_its_refill(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        # 10 a minute; set to 5: 5 a minute (it still fills from empty in 60 s).
        await store.set_override("o:b", 5)
        c = ob()
        assert (await store.reserve([c], NOW)).taken
        assert c.limit == 5 and c.rate == pytest.approx(5 / 60)
        for _ in range(4):
            assert (await store.reserve([ob()], NOW)).taken
        refused = await store.reserve([ob()], NOW)
        assert not refused.taken and refused.states[0].retry_after == pytest.approx(12)  # 60 s / 5
        # Larger again: the bucket does not jump to the new size, it refills towards it.
        await store.set_override("o:b", 20)
        [p] = await store.peek([ob()], NOW + 12)
        assert p.override == 20 and p.level == pytest.approx(4)  # 12 s at 20 a minute
        # Smaller than what it holds: tokens above the new size are gone.
        await store.set_override("o:b", 2)
        [p] = await store.peek([ob()], NOW + 60)
        assert p.level == pytest.approx(2)
        # 0 is not a bucket size: it is one token (a bucket of 0 would never refill).
        await store.set_override("o:b", 0)
        c = ob()
        await store.peek([c], NOW)
        assert c.limit == 1 and c.rate > 0

    with_store(body)


def test_peek_changes_nothing_and_reports_the_override(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        assert [p.level for p in await store.peek([ow(), ob()], NOW)] == [0, 10]  # untouched
        await store.reserve([ow(cost=3), ob(cost=4)], NOW)
        w, b = ow(), ob()
        peeks = await store.peek([w, b], NOW)
        assert [p.level for p in peeks] == [3, pytest.approx(6)]
        assert [p.override for p in peeks] == [None, None]
        again = await store.peek([ow(), ob()], NOW)
        assert [p.level for p in again] == [3, pytest.approx(6)]
        await store.set_override("o:w", 7)
        w = ow()
        [p] = await store.peek([w], NOW)
        assert p.override == 7 and w.limit == 7 and p.level == 3

    with_store(body)


def test_reset_empties_a_window_and_fills_a_bucket(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        for _ in range(10):
            await store.reserve([ow(), ob()], NOW)
        assert not (await store.reserve([ow()], NOW)).taken
        await store.set_override("o:w", 5)
        await store.reset([ow(), ob()], NOW)
        peeks = await store.peek([ow(), ob()], NOW)
        assert [p.level for p in peeks] == [0, 10]
        assert peeks[0].override == 5  # reset is usage only: the override stays
        assert (await store.reserve([ow()], NOW)).taken
        # A settlement arriving after the reset gives back no more than there is.
        await store.adjust([ow()], [-7], NOW)
        assert [p.level for p in await store.peek([ow()], NOW)] == [0]

    with_store(body)


def test_adding_usage_by_hand_creates_the_window_and_taking_back_stops_at_zero(
    with_store: Callable[[Body], None],
) -> None:
    async def body(store: Store) -> None:
        # Added with enforce=False: taken even past the limit, and the window key is created.
        got = await store.reserve([ow(cost=12, enforce=False)], NOW)
        assert got.taken
        assert [p.level for p in await store.peek([ow()], NOW)] == [12]
        assert not (await store.reserve([ow()], NOW)).taken
        await store.adjust([ow()], [-5], NOW)
        assert [p.level for p in await store.peek([ow()], NOW)] == [7]
        await store.adjust([ow()], [-100], NOW)
        assert [p.level for p in await store.peek([ow()], NOW)] == [0]
        # A bucket: usage added takes tokens (into debt), taken back refills up to the size.
        await store.reserve([ob(cost=15, enforce=False)], NOW)
        assert [p.level for p in await store.peek([ob()], NOW)] == [pytest.approx(-5)]
        await store.adjust([ob()], [-100], NOW)
        assert [p.level for p in await store.peek([ob()], NOW)] == [pytest.approx(10)]

    with_store(body)


def test_overrides_are_shared_by_every_client_of_one_redis(redis_server: RedisServer) -> None:
    async def main() -> None:
        a, b = RedisStore(redis_server.url, "s:"), RedisStore(redis_server.url, "s:")
        try:
            await a.client.flushdb()
            for _ in range(3):
                assert (await a.reserve([ow()], NOW)).taken
            await b.set_override("o:w", 3)
            assert not (await a.reserve([ow()], NOW)).taken  # set through b, in force in a
            await b.reset([ow()], NOW)
            assert (await a.reserve([ow()], NOW)).taken
            assert await a.client.ttl("s:o:w") == -1  # an override never expires
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
