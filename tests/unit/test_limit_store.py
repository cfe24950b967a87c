"""The limit stores: the in-process one and Redis (a real redis-server), held to the same tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from extproc.limits.redis_store import RedisStore
from extproc.limits.store import Counter, MemoryStore, Store, StoreUnavailable
from tests.redis_server import RedisServer, start_redis

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


Body = Callable[[Store], Awaitable[None]]


@pytest.fixture(params=["memory", "redis", "redis-uvloop", "redis-unix"])
def with_store(request: pytest.FixtureRequest, redis_server: RedisServer) -> Callable[[Body], None]:
    """Runs a test body against a fresh store of each kind, in its own event loop: asyncio's, and
    uvloop's for Redis (the sidecars' loop, whose transports are not asyncio.Transport subclasses),
    on loopback TCP and, with ``redis-unix``, on the same Redis's Unix socket (``unix://``)."""

    def run(body: Body) -> None:
        async def main() -> None:
            if request.param == "memory":
                await body(MemoryStore())
                return
            url = redis_server.unix_url if request.param == "redis-unix" else redis_server.url
            s = RedisStore(url, key_prefix="t:")
            await s.client.flushdb()
            try:
                await body(s)
            finally:
                await s.close()

        if request.param in ("redis-uvloop", "redis-unix"):
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
            return
        asyncio.run(main())

    return run


def window(key: str = "w", limit: int = 10, cost: int = 1, end: float = NOW + 60, **kw: object) -> Counter:
    return Counter(key, limit, cost, window_end=end, **kw)  # type: ignore[arg-type]


def bucket(key: str = "b", size: int = 10, cost: int = 1, rate: float = 10 / 60) -> Counter:
    return Counter(key, size, cost, rate=rate)


def test_a_window_takes_its_limit_then_refuses_without_charging(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        results = [await store.reserve([window()], NOW) for _ in range(12)]
        assert [r.taken for r in results] == [True] * 10 + [False] * 2
        assert results[0].states[0].remaining == 9
        assert results[9].states[0].remaining == 0
        refused = results[10].states[0]
        assert not refused.fits and refused.remaining == 0
        assert refused.reset == pytest.approx(60) and refused.retry_after == pytest.approx(60)

    with_store(body)


def test_a_cost_that_does_not_fit_is_refused_and_costs_nothing(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        assert (await store.reserve([window(cost=7)], NOW)).taken
        refused = await store.reserve([window(cost=4)], NOW)
        assert not refused.taken and refused.states[0].remaining == 3
        assert (await store.reserve([window(cost=3)], NOW)).taken  # the 4 were never taken

    with_store(body)


def test_all_or_nothing_over_several_counters(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        full = window("full", limit=1)
        assert (await store.reserve([full], NOW)).taken
        got = await store.reserve([window("other", limit=5), full], NOW)
        assert not got.taken
        assert [s.fits for s in got.states] == [True, False]
        # "other" was not charged by the refused reservation: all five are still there.
        assert all([(await store.reserve([window("other", limit=5)], NOW)).taken for _ in range(5)])

    with_store(body)


def test_a_new_window_starts_empty(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        for _ in range(10):
            await store.reserve([window("w:0", end=NOW + 1)], NOW)
        assert not (await store.reserve([window("w:0", end=NOW + 1)], NOW)).taken
        assert (await store.reserve([window("w:1", end=NOW + 61)], NOW + 1)).taken

    with_store(body)


def test_a_bucket_refills_continuously(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        for _ in range(10):
            assert (await store.reserve([bucket()], NOW)).taken
        refused = await store.reserve([bucket()], NOW)
        assert not refused.taken
        assert refused.states[0].retry_after == pytest.approx(6)  # one token: 60 s / 10
        assert refused.states[0].reset == pytest.approx(6)
        assert not (await store.reserve([bucket()], NOW + 5.9)).taken
        got = await store.reserve([bucket()], NOW + 6.1)
        assert got.taken and got.states[0].remaining == pytest.approx(0.1 / 6, abs=1e-6)

    with_store(body)


def test_usage_beyond_the_reservation_leaves_a_bucket_in_debt(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        # The seed's bucket: 1 token, 1 back every 100 s; the request used 20.
        seed = Counter("seed", 1, 1, rate=1 / 100)
        assert (await store.reserve([seed], NOW)).taken
        await store.adjust([seed], [19], NOW + 1)
        refused = await store.reserve([seed], NOW + 2)
        assert not refused.taken
        assert refused.states[0].remaining == pytest.approx(-19 + 2 / 100, abs=1e-6)
        assert refused.states[0].retry_after == pytest.approx(2000 - 2, abs=0.01)

    with_store(body)


def test_giving_back_never_overfills(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        c = bucket(cost=4)
        assert (await store.reserve([c], NOW)).taken
        await store.adjust([c], [-100], NOW)
        got = await store.reserve([bucket(cost=10)], NOW)
        assert got.taken and got.states[0].remaining == 0

    with_store(body)


def test_a_window_is_settled_with_the_real_cost(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        c = window(limit=100, cost=80)
        assert (await store.reserve([c], NOW)).taken
        await store.adjust([c], [-70], NOW)  # it used 10
        assert (await store.reserve([window(limit=100, cost=90)], NOW)).taken

    with_store(body)


def test_shadow_counters_count_but_never_refuse(with_store: Callable[[Body], None]) -> None:
    async def body(store: Store) -> None:
        shadow = window("s", limit=1, enforce=False)
        for _ in range(3):
            got = await store.reserve([shadow], NOW)
            assert got.taken
        assert not got.states[0].fits and got.states[0].remaining == -2

    with_store(body)


def test_redis_check_and_reserve_is_atomic_under_concurrency(redis_server: RedisServer) -> None:
    async def body() -> None:
        stores = [RedisStore(redis_server.url, key_prefix="atomic:") for _ in range(3)]
        await stores[0].client.flushdb()
        c = window("shared", limit=25)
        got = await asyncio.gather(*[stores[i % 3].reserve([c], NOW) for i in range(120)])
        assert sum(r.taken for r in got) == 25
        for s in stores:
            await s.close()

    asyncio.run(body())


def test_redis_reports_a_buckets_level_exactly_so_its_fit_is_the_scripts(redis_server: RedisServer) -> None:
    """A level just under the cost (9.999999999999998 of 10): the script refuses, and the state
    the caller works out from the level it returns must say it did not fit (with tostring's 14
    digits it came back as 10, which fits)."""
    import redis

    async def body() -> None:
        store = RedisStore(redis_server.url, key_prefix="exact:")
        try:
            with redis.Redis.from_url(redis_server.url) as other:
                other.hset("exact:b", mapping={"l": repr(10 - 2**-49), "t": repr(NOW)})
            got = await store.reserve([Counter("b", 10, 10, 1.0)], NOW)
            assert not got.taken
            assert not got.states[0].fits and got.states[0].remaining == 10 - 2**-49
        finally:
            await store.close()

    asyncio.run(body())


def test_a_unix_url_puts_both_of_the_stores_connections_on_the_socket(redis_server: RedisServer) -> None:
    """``unix:///path?db=0``: the scripts' connection (resp.py) and the admin client (redis-py)
    both reach Redis over its Unix socket, not TCP (Redis names the socket as their address)."""
    import redis

    async def body() -> None:
        store = RedisStore(redis_server.unix_url, key_prefix="ux:")
        try:
            await store.set_override("ux-override", 5)  # the admin client
            assert (await store.reserve([window("ux", override="ux-override")], NOW)).counters[0].limit == 5
            with redis.Redis.from_url(redis_server.url) as tcp:
                clients = tcp.client_list()
            on_socket = [c for c in clients if c["addr"].startswith(str(redis_server.unix_socket))]
            assert len(on_socket) == 2, clients  # the scripts' link and the admin client's
            assert all(c["db"] == "0" for c in on_socket)
        finally:
            await store.close()

    asyncio.run(body())


def test_redis_reserve_is_written_when_called_so_the_caller_works_while_redis_answers(
    redis_server: RedisServer,
) -> None:
    """The limit stages send in on_request and await in decide: Redis must have the command before
    the caller's task yields. Two reservations sent back to back are both counted before either
    reply is read (one round trip between them)."""
    import redis

    async def body() -> None:
        store = RedisStore(redis_server.url, key_prefix="sent:")
        await store.client.flushdb()
        assert (await store.reserve([window("warm")], NOW)).taken  # the connection is up
        first = store.reserve([window("a", cost=3)], NOW)
        second = store.reserve([window("b", cost=4)], NOW)
        # No await since: a blocking client sees both counters charged in Redis.
        other = redis.Redis.from_url(redis_server.url)
        seen: list[bytes | None] = []
        for _ in range(200):
            seen = other.mget("sent:a", "sent:b")
            if None not in seen:
                break
            time.sleep(0.005)
        other.close()
        assert seen == [b"3", b"4"]
        got = [await first, await second]
        assert [r.taken for r in got] == [True, True]
        assert [r.states[0].remaining for r in got] == [7, 6]
        await store.close()

    asyncio.run(body())


def test_redis_down_is_store_unavailable_and_recovers_without_restart(tmp_path: Path) -> None:
    async def body() -> None:
        server = start_redis(tmp_path / "r")
        store = RedisStore(server.url, key_prefix="down:", timeout=0.2)
        try:
            assert (await store.reserve([window()], NOW)).taken
            server.stop()
            with pytest.raises(StoreUnavailable):
                await store.reserve([window()], NOW)
            assert not store.healthy
            server.start()  # the same port, an empty Redis
            assert (await store.reserve([window()], NOW)).taken
            assert store.healthy
        finally:
            await store.close()
            server.stop()

    asyncio.run(body())


def test_a_redis_restart_between_requests_costs_no_request(tmp_path: Path) -> None:
    async def body() -> None:
        server = start_redis(tmp_path / "r2")
        store = RedisStore(server.url, key_prefix="restart:", timeout=0.5)
        try:
            assert (await store.reserve([window()], NOW)).taken  # a pooled connection now
            server.stop()
            server.start()
            # The pooled connection is broken; it is replaced within the same call.
            assert (await store.reserve([window()], NOW)).taken
        finally:
            await store.close()
            server.stop()

    asyncio.run(body())


def test_redis_a_new_window_expires_a_minute_after_it_ends_and_keeps_that_expiry(
    redis_server: RedisServer,
) -> None:
    """RESERVE looks at a window's expiry only when INCRBY created it: a window settled back to
    nothing keeps the expiry it was created with (another replica's clock cannot stretch it)."""
    import time

    async def main() -> None:
        s = RedisStore(redis_server.url, key_prefix="t:")
        await s.client.flushdb()
        try:
            end = time.time() + 1000  # Redis expires keys by its own clock: a real one here
            assert (await s.reserve([window("w", end=end)], end - 1000)).taken
            ttl = await s.client.pttl("t:w")
            assert abs(ttl - (end + 60 - time.time()) * 1000) < 5000
            await s.adjust([window("w", end=end)], [-1], end - 1000)  # given back: the key holds 0
            assert await s.client.get("t:w") == b"0"
            assert (await s.reserve([window("w", end=end + 5000)], end - 999)).taken
            assert abs(await s.client.pttl("t:w") - ttl) < 5000  # not 5000 s later
        finally:
            await s.close()

    asyncio.run(main())


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_redis_a_window_lasts_its_length_by_the_gateways_clock_not_redis_s(
    redis_server: RedisServer, skew: float
) -> None:
    """The gateway's clock and Redis's may disagree (another host; the tests' offset clock): a
    window's key lives for what is left of the window plus a minute, counted from the gateway's
    now. With the end written as an absolute time for Redis's clock, a gateway an hour behind had
    its counters deleted as soon as they were written, and enforced no limit at all."""

    async def main() -> None:
        s = RedisStore(redis_server.url, key_prefix="skew:")
        await s.client.flushdb()
        try:
            now = time.time() + skew
            w = window("w", limit=2, end=now + 30)
            assert [(await s.reserve([w], now)).taken for _ in range(3)] == [True, True, False]
            assert abs(await s.client.pttl("skew:w") - 90_000) < 5000  # 30 s left + 60 s
        finally:
            await s.close()

    asyncio.run(main())


def test_redis_all_or_nothing_holds_across_windows_buckets_overrides_and_shadows(
    redis_server: RedisServer,
) -> None:
    """One RESERVE over every kind of counter a request can touch: a refusal by any enforced one
    charges none, and the levels and overrides come back per counter, in order."""

    async def main() -> None:
        s = RedisStore(redis_server.url, key_prefix="t:")
        await s.client.flushdb()
        try:
            await s.set_override("ovr:w2", 3)
            counters = lambda: [  # noqa: E731 - fresh counters: a reservation writes overrides into them
                bucket("b", size=10, cost=4),
                window("w1", limit=100, cost=2),
                window("w2", limit=50, cost=2, override="ovr:w2", cap=True),
                window("shadow", limit=1, cost=5, enforce=False),
            ]
            first = counters()
            got = await s.reserve(first, NOW)
            assert got.taken and first[2].limit == 3  # the override is the limit in force
            assert [round(st.remaining, 6) for st in got.states] == [6, 98, 1, -4]
            again = await s.reserve(counters(), NOW)  # w2 has 1 left of 3: nothing is charged
            assert not again.taken and [st.fits for st in again.states] == [True, True, False, False]
            assert [round(st.remaining, 6) for st in again.states] == [6, 98, 1, -4]
            assert await s.client.get("t:w1") == b"2" and await s.client.get("t:shadow") == b"5"
        finally:
            await s.close()

    asyncio.run(main())
