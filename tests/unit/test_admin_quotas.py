"""The admin API's /v1/quotas routes on a real aiohttp server, over the in-process store and a
real policy file: read, set, adjust, reset, the metrics they move, and 400s naming the field."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from extproc.admin import quotas as admin_quotas
from extproc.admin.server import AdminContext, build_app
from extproc.limits import managed
from extproc.limits.managed import FileLimits, Subject
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.store import MemoryStore
from extproc.telemetry import runtime
from extproc.telemetry.metrics import GatewayMetrics

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = """domain: llm
descriptors:
  - key: group_id
    value: marketing
    metadata: {type: tokens}
    rate_limit: {unit: month, requests_per_unit: 1000}
  - key: user_id
    rate_limit: {unit: minute, requests_per_unit: 5}
    descriptors:
      - key: model
        rate_limit: {unit: hour, requests_per_unit: 50}
  - key: api_key_id
    rate_limit: {unit: minute, requests_per_unit: 3}
"""
OTHER = """domain: other
descriptors:
  - key: api_key_id
    rate_limit: {unit: hour, requests_per_unit: 100}
"""


class Limits:
    """What the routes use of a LimitsContext: its store and its quota sources."""

    def __init__(self, store: MemoryStore, policies: list[WatchedPolicy]) -> None:
        self.store = store
        self.policies = policies

    def quota_sources(self) -> list[managed.QuotaSource]:
        return [FileLimits(lambda: self.policies)]

    def manager(self) -> managed.QuotaManager:
        return managed.QuotaManager(self.store, self.quota_sources(), runtime.current().metrics)


Body = Callable[[TestClient, Limits, Path], Awaitable[None]]


@pytest.fixture
def api(tmp_path: Path) -> Callable[[Body], None]:
    def run(body: Body) -> None:
        (tmp_path / "rl.yaml").write_text(POLICY)
        (tmp_path / "other.yaml").write_text(OTHER)

        async def main() -> None:
            policies = [WatchedPolicy(tmp_path / "rl.yaml"), WatchedPolicy(tmp_path / "other.yaml")]
            limits = Limits(MemoryStore(), policies)
            ctx = AdminContext(None, tmp_path, None, limits)  # type: ignore[arg-type]
            app = build_app(ctx, TOKEN, [admin_quotas.routes])
            async with TestClient(TestServer(app)) as client:
                await body(client, limits, tmp_path)

        asyncio.run(main())

    return run


async def get(client: TestClient, **query: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/v1/quotas", params=query, headers=AUTH)
    return resp.status, await resp.json()


async def post(client: TestClient, op: str, body: object) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1/quotas/{op}", json=body, headers=AUTH)
    return resp.status, await resp.json()


async def charge(limits: Limits, subject: str, cost: int) -> bool:
    """A request as the rate limit stage makes it: the file's counter, with its override key."""
    s, now = Subject.parse(subject), time.time()
    policy = limits.policies[0].current
    [m] = [m for m in policy.match(s.values()) if len(m.entries) == len(s.entries)]
    counter = managed.file_counter(policy.domain, m, now, cost)
    return (await limits.store.reserve([counter], now)).taken


def test_read_reports_used_limit_and_remaining(api: Callable[[Body], None]) -> None:
    async def body(client: TestClient, limits: Limits, _: Path) -> None:
        assert await charge(limits, "group_id=marketing", 300)
        status, got = await get(client, subject="group_id=marketing")
        assert status == 200, got
        [q] = got["quotas"]
        assert got["subject"] == "group_id=marketing"
        assert q["quota"] == "rateLimits/llm/group_id=marketing"
        assert (q["unit"], q["period"], q["limit"], q["configured"], q["override"]) == (
            "tokens", "month", 1000, 1000, None,
        )  # fmt: skip
        assert (q["used"], q["remaining"]) == (300, 700)
        assert 0 < q["resets_in_seconds"] <= 30 * 86400
        # The same numbers as metrics.
        reg = runtime.current().metrics.registry
        labels = {"quota": q["quota"], "period": "month", "unit": "tokens", "api_key_id": "", "user_id": "",
                  "group_id": "marketing", "model": "", "route": ""}  # fmt: skip
        assert reg.get_sample_value("agentgateway_quota_used", labels) == 300
        assert reg.get_sample_value("agentgateway_quota_limit", labels) == 1000
        assert reg.get_sample_value("agentgateway_quota_remaining", labels) == 700

    api(body)


def test_set_overrides_the_limit_from_the_next_request_and_null_clears_it(
    api: Callable[[Body], None],
) -> None:
    async def body(client: TestClient, limits: Limits, _: Path) -> None:
        for _ in range(2):
            assert await charge(limits, "user_id=alice", 1)
        status, got = await post(client, "set", {"subject": "user_id=alice", "limit": 2})
        assert status == 200, got
        [q] = got["quotas"]
        assert (q["limit"], q["configured"], q["override"], q["remaining"]) == (2, 5, 2, 0)
        assert not await charge(limits, "user_id=alice", 1)
        assert await charge(limits, "user_id=bob", 1)  # only alice's
        status, got = await post(client, "set", {"subject": "user_id=alice", "limit": None})
        assert status == 200 and got["quotas"][0]["limit"] == 5 and got["quotas"][0]["override"] is None
        assert await charge(limits, "user_id=alice", 1)

    api(body)


def test_an_override_survives_the_policy_file_reloading(api: Callable[[Body], None]) -> None:
    async def body(client: TestClient, limits: Limits, tmp: Path) -> None:
        await post(client, "set", {"subject": "group_id=marketing", "limit": 10})
        (tmp / "rl.yaml").write_text(POLICY.replace("requests_per_unit: 1000", "requests_per_unit: 9000"))
        assert await limits.policies[0].refresh()
        _, got = await get(client, subject="group_id=marketing")
        [q] = got["quotas"]
        assert (q["configured"], q["limit"], q["override"]) == (9000, 10, 10)

    api(body)


def test_adjust_adds_usage_and_takes_it_back(api: Callable[[Body], None]) -> None:
    async def body(client: TestClient, limits: Limits, _: Path) -> None:
        status, got = await post(client, "adjust", {"subject": "group_id=marketing", "delta": 1200})
        assert status == 200, got
        assert (got["quotas"][0]["used"], got["quotas"][0]["remaining"]) == (1200, 0)  # past the limit
        assert not await charge(limits, "group_id=marketing", 1)
        _, got = await post(client, "adjust", {"subject": "group_id=marketing", "delta": -500})
        assert got["quotas"][0]["used"] == 700
        assert await charge(limits, "group_id=marketing", 300)
        _, got = await post(client, "adjust", {"subject": "group_id=marketing", "delta": -5000})
        assert got["quotas"][0]["used"] == 0  # credit stops at nothing used

    api(body)


def test_reset_zeroes_the_period_and_keeps_the_override(api: Callable[[Body], None]) -> None:
    async def body(client: TestClient, limits: Limits, _: Path) -> None:
        await post(
            client, "set", {"subject": "api_key_id=k1", "quota": "rateLimits/llm/api_key_id", "limit": 1}
        )
        assert await charge(limits, "api_key_id=k1", 1)
        assert not await charge(limits, "api_key_id=k1", 1)
        status, got = await post(client, "reset", {"subject": "api_key_id=k1"})  # every quota of k1
        assert status == 200, got
        assert sorted(q["quota"] for q in got["quotas"]) == [
            "rateLimits/llm/api_key_id",
            "rateLimits/other/api_key_id",
        ]
        mine = next(q for q in got["quotas"] if q["quota"] == "rateLimits/llm/api_key_id")
        assert (mine["used"], mine["limit"]) == (0, 1)
        assert await charge(limits, "api_key_id=k1", 1)

    api(body)


def test_a_nested_descriptor_is_its_own_subject(api: Callable[[Body], None]) -> None:
    async def body(client: TestClient, limits: Limits, _: Path) -> None:
        _, got = await get(client, subject="user_id=alice,model=gpt-4o")
        assert [q["quota"] for q in got["quotas"]] == ["rateLimits/llm/user_id > model"]
        assert got["quotas"][0]["limit"] == 50

    api(body)


@pytest.mark.parametrize(
    ("op", "body", "param"),
    [
        ("set", {"limit": 5}, "subject"),
        ("set", {"subject": "team=marketing", "limit": 5}, "subject"),
        ("set", {"subject": "group_id", "limit": 5}, "subject"),
        ("set", {"subject": "user_id=a,user_id=b", "limit": 5}, "subject"),
        ("set", {"subject": 7, "limit": 5}, "subject"),
        ("set", {"subject": "group_id=marketing"}, "limit"),
        ("set", {"subject": "group_id=marketing", "limit": -1}, "limit"),
        ("set", {"subject": "group_id=marketing", "limit": "5"}, "limit"),
        ("set", {"subject": "group_id=marketing", "limit": 2.5}, "limit"),
        ("set", {"subject": "group_id=marketing", "limit": True}, "limit"),
        ("set", {"subject": "group_id=marketing", "limit": 2**60}, "limit"),
        ("set", {"subject": "group_id=marketing", "limit": 5, "value": 5}, "value"),
        ("set", {"subject": "group_id=marketing", "quota": 3, "limit": 5}, "quota"),
        ("adjust", {"subject": "group_id=marketing"}, "delta"),
        ("adjust", {"subject": "group_id=marketing", "delta": "10"}, "delta"),
        ("adjust", {"subject": "group_id=marketing", "delta": None}, "delta"),
        ("reset", {"subject": "group_id=marketing", "delta": 1}, "delta"),
        ("set", {"subject": "api_key_id=k1", "limit": 5}, "quota"),  # two quotas apply: name one
        ("set", [1, 2], None),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    api: Callable[[Body], None], op: str, body: object, param: str | None
) -> None:
    async def run(client: TestClient, limits: Limits, _: Path) -> None:
        status, got = await post(client, op, body)
        assert status == 400, got
        assert got["error"]["param"] == param and got["error"]["code"] == "bad_request"
        if param is not None:
            assert got["error"]["message"].startswith(param + ":")

    api(run)


def test_unknown_quotas_and_subjects_are_404_and_no_token_is_401(api: Callable[[Body], None]) -> None:
    async def body(client: TestClient, limits: Limits, _: Path) -> None:
        status, got = await get(client, subject="group_id=sales")  # no limit for sales in the file
        assert status == 404 and got["error"]["param"] == "subject"
        status, got = await get(client, subject="group_id=marketing", quota="rateLimits/llm/nope")
        assert status == 404 and got["error"]["param"] == "quota"
        assert "rateLimits/llm/group_id=marketing" in got["error"]["message"]  # what does apply
        status, got = await get(client)
        assert status == 400 and got["error"]["param"] == "subject"
        resp = await client.post("/v1/quotas/reset", data=b"{not json", headers=AUTH)
        assert resp.status == 400 and (await resp.json())["error"]["param"] is None
        resp = await client.post("/v1/quotas/reset", json={"subject": "group_id=marketing"})
        assert resp.status == 401

    api(body)


def test_refresh_rereads_the_exported_quotas_when_a_period_rolls_over(tmp_path: Path) -> None:
    """A subject that sends nothing more still gets a right gauge: settled usage, a new month."""
    (tmp_path / "rl.yaml").write_text(POLICY)
    metrics = GatewayMetrics()
    store = MemoryStore()
    clock = [1_800_000_000.0]
    manager = managed.QuotaManager(
        store, [FileLimits(lambda: [WatchedPolicy(tmp_path / "rl.yaml")])], metrics, lambda: clock[0]
    )
    labels = {"quota": "rateLimits/llm/group_id=marketing", "period": "month", "unit": "tokens",
              "api_key_id": "", "user_id": "", "group_id": "marketing", "model": "", "route": ""}  # fmt: skip

    async def main() -> None:
        marketing = Subject.parse("group_id=marketing")
        await manager.adjust(marketing, None, 900)
        assert metrics.registry.get_sample_value("agentgateway_quota_used", labels) == 900
        # Usage settled behind the gauge's back (as a stream's tokens are), then a refresh.
        [q] = manager.find(marketing, None, clock[0])
        await store.adjust([q.counter], [-400], clock[0])
        assert await manager.refresh() == 1
        assert metrics.registry.get_sample_value("agentgateway_quota_used", labels) == 500
        clock[0] += 30 * 86400  # the next month: nothing used yet
        await manager.refresh()
        assert metrics.registry.get_sample_value("agentgateway_quota_used", labels) == 0
        assert metrics.registry.get_sample_value("agentgateway_quota_remaining", labels) == 1000

    asyncio.run(main())


def test_quota_gauges_count_against_the_cardinality_limit() -> None:
    metrics = GatewayMetrics(limit=2)
    for user in ("a", "b", "c"):
        metrics.observe_quota(managed.gauge_labels("q", "hour", "requests", [("user_id", user)]), 1, 5)
    assert len(metrics.quota_series()) == 2
    one = {"quota": "q", "period": "hour", "unit": "requests", "api_key_id": "", "user_id": "c",
           "group_id": "", "model": "", "route": ""}  # fmt: skip
    assert metrics.registry.get_sample_value("agentgateway_quota_used", one) is None


def test_a_quotas_gauges_follow_every_decision_and_a_changed_limit() -> None:
    metrics = GatewayMetrics()
    labels = managed.gauge_labels("q", "hour", "requests", [("user_id", "a")])
    one = {"quota": "q", "period": "hour", "unit": "requests", "api_key_id": "", "user_id": "a",
           "group_id": "", "model": "", "route": ""}  # fmt: skip
    got = metrics.registry.get_sample_value
    for used, limit in ((1, 5), (2, 5), (2, 8), (9, 8), (0, 5)):
        metrics.observe_quota(labels, used, limit)
        assert (got("agentgateway_quota_used", one), got("agentgateway_quota_limit", one)) == (used, limit)
        assert got("agentgateway_quota_remaining", one) == max(0, limit - used)
