"""Dollar budgets managed through the admin API (a real aiohttp server over a real LimitsContext,
its budget stage and the in-process store): read in dollars and micro-dollars, set, adjust and
reset, each in force at the next request; ``"*"`` budgets per subject; the budget gauges; the
CLI's dollars."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from extproc import gateway
from extproc.admin import quotas as admin_quotas
from extproc.admin import quotas_cli
from extproc.admin.server import AdminContext, build_app
from extproc.config.loader import parse_text
from extproc.config.model import GlobalConfig
from extproc.limits.budget_file import parse_budgets
from extproc.limits.budget_quotas import BudgetQuotas
from extproc.limits.context import LimitsContext
from extproc.limits.managed import Subject
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.store import MemoryStore
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.stage import Denied, request_side
from extproc.pipeline.stages.budget import BudgetStage
from extproc.telemetry import runtime
from extproc.telemetry.prices import Price

TOKEN = "admin-token-for-budget-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100}
HI_RESERVED = 1023  # micro-dollars: 9 prompt tokens at 2.5, 100 output tokens at 10
ALICE = {"api_key_id": "k-alice", "user_id": "alice", "group_id": "marketing"}
BOB = {"api_key_id": "k-bob", "user_id": "bob", "group_id": "sales"}
BUDGETS = """\
budgets:
  - {group_id: marketing, period: month, usd: 500}
  - {api_key_id: "*", period: day, usd: 5}
"""
RATE_LIMITS = """domain: llm
descriptors:
  - key: group_id
    value: marketing
    rate_limit: {unit: hour, requests_per_unit: 1000}
"""
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
MONTH_END = 1_801_440_000.0  # 2027-02-01 00:00 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def telemetry() -> Iterator[runtime.Telemetry]:
    before = runtime._current
    t = runtime.Telemetry.build(GlobalConfig())
    t.prices.replace({"gpt-4o": Price(2.5e-6, 1e-5)})
    runtime.install(t)
    yield t
    runtime._current = before


def routes_config(policies: dict[str, Any]) -> gateway.Gateway:
    route = {
        "name": "r",
        "matches": [{"path": {"pathPrefix": "/p"}}],
        "backends": [{"ai": {"name": "openai", "provider": {"openAI": {}}, "hostOverride": "127.0.0.1:9"}}],
        "policies": policies,
    }
    text = yaml.safe_dump({"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]})
    return gateway.build(parse_text(text).config)


class Env:
    def __init__(self, client: TestClient, ctx: LimitsContext, stage: BudgetStage, clock: Clock) -> None:
        self.client, self.ctx, self.stage, self.clock = client, ctx, stage, clock

    async def request(self, identity: dict[str, str] = ALICE) -> Exchange:
        """A request through the budget stage, settled at its reservation (no usage, answered)."""
        ex = Exchange("id", self.stage.route, "completions", "POST", "/p/v1/chat/completions")
        ex.llm = LLMRequest("completions", dict(HI))
        ex.identity = dict(identity)
        ex.upstream = self.stage.route.direct_upstream
        try:
            await request_side(self.stage, ex)
        finally:
            await asyncio.sleep(0)  # the decision's gauges are set at the event loop's next turn
        ex.outcome = "ok"
        await self.stage.on_complete(ex)
        return ex

    async def refused(self, identity: dict[str, str] = ALICE) -> Denied:
        with pytest.raises(Denied) as err:
            await self.request(identity)
        return err.value

    async def get(self, subject: str, **query: str) -> dict[str, Any]:
        resp = await self.client.get("/v1/quotas", params={"subject": subject, **query}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 200, body
        return body  # type: ignore[no-any-return]

    async def post(self, op: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        resp = await self.client.post(f"/v1/quotas/{op}", json=body, headers=AUTH)
        got = await resp.json()
        assert resp.status == status, got
        return got  # type: ignore[no-any-return]


Body = Callable[[Env], Awaitable[None]]


@pytest.fixture
def env(tmp_path: Path) -> Callable[..., None]:
    def run(body: Body, rate_limits: bool = False) -> None:
        (tmp_path / "budgets.yaml").write_text(BUDGETS)
        policies: dict[str, Any] = {"budgets": {"file": "budgets.yaml"}}
        if rate_limits:
            (tmp_path / "rl.yaml").write_text(RATE_LIMITS)
            policies["rateLimits"] = {"file": "rl.yaml", "domain": "llm"}
        gw = routes_config(policies)

        async def main() -> None:
            ctx = LimitsContext(gw, tmp_path, store=MemoryStore())
            clock = Clock(NOW)
            ctx.clock = clock  # the stages and the admin API read the same clock
            stage = ctx.budget_stage_for(gw.routes[0])
            assert stage is not None
            if rate_limits:
                ctx.stage_for(gw.routes[0])
            app = build_app(AdminContext(gw, tmp_path, None, ctx), TOKEN, [admin_quotas.routes])
            async with TestClient(TestServer(app)) as client:
                await body(Env(client, ctx, stage, clock))

        asyncio.run(main())

    return run


def test_read_reports_a_budget_in_micro_dollars_and_dollars(env: Callable[..., None]) -> None:
    async def body(e: Env) -> None:
        await e.request()
        got = await e.get("group_id=marketing")
        assert got["quotas"] == [
            {
                "quota": "budget/group_id/month", "subject": "group_id=marketing", "unit": "usd_micros",
                "period": "month", "limit": 500_000_000, "configured": 500_000_000, "override": None,
                "used": HI_RESERVED, "remaining": 500_000_000 - HI_RESERVED,
                "resets_in_seconds": int(MONTH_END - NOW), "period_end": MONTH_END, "shadow": False,
                "limit_usd": 500.0, "configured_usd": 500.0, "override_usd": None, "used_usd": 0.001023,
                "remaining_usd": 499.998977,
            }
        ]  # fmt: skip
        # A "*" budget is each key's own: k-alice's day, as it stands.
        [key] = (await e.get("api_key_id=k-alice"))["quotas"]
        assert (key["quota"], key["used"], key["limit_usd"]) == ("budget/api_key_id/day", HI_RESERVED, 5.0)

    env(body)


def test_set_in_dollars_is_in_force_at_the_next_request_and_for_later_periods(
    env: Callable[..., None],
) -> None:
    async def body(e: Env) -> None:
        await e.request()
        got = await e.post("set", {"subject": "group_id=marketing", "limit_usd": 0.0015})
        [q] = got["quotas"]
        assert (q["limit"], q["override"], q["configured"], q["remaining"]) == (1500, 1500, 500_000_000, 477)
        denied = await e.refused()
        assert denied.status == 429 and denied.code == "budget_exceeded"
        assert "group_id=marketing month: $0.0015" in denied.message
        assert (denied.headers or {})["x-budget-limit"] == "0.0015"
        assert await e.request(BOB)  # sales has no such budget
        e.clock.now = MONTH_END + 3600  # next month: nothing spent, the override still holds
        first = await e.request()
        assert first.response_headers["x-budget-limit"] == "0.0015"
        await e.refused()
        await e.post("set", {"subject": "group_id=marketing", "limit_usd": None})  # cleared
        assert (await e.request()).response_headers["x-budget-scope"] == "api_key_id=k-alice day"

    env(body)


def test_a_star_budget_is_set_per_subject(env: Callable[..., None]) -> None:
    async def body(e: Env) -> None:
        await e.post("set", {"subject": "api_key_id=k-alice", "limit": 1000})  # micro-dollars
        denied = await e.refused()
        assert "api_key_id=k-alice day: $0.001" in denied.message
        ok = await e.request(BOB)  # the same "*" budget, bob's own counter and limit
        assert ok.response_headers["x-budget-limit"] == "5"
        [bob] = (await e.get("api_key_id=k-bob"))["quotas"]
        assert (bob["override"], bob["used"]) == (None, HI_RESERVED)

    env(body)


def test_adjust_charges_and_credits_and_reset_starts_the_period_again(env: Callable[..., None]) -> None:
    async def body(e: Env) -> None:
        await e.request()
        got = await e.post("adjust", {"subject": "group_id=marketing", "delta_usd": 499.999})
        assert got["quotas"][0]["used"] == 499_999_000 + HI_RESERVED
        await e.refused()  # $0.000977 left - 1023 = not enough
        credit = await e.post("adjust", {"subject": "group_id=marketing", "delta_usd": -0.5})
        assert credit["quotas"][0]["used_usd"] == 499.500023
        await e.request()
        await e.post("adjust", {"subject": "group_id=marketing", "delta": 10_000_000_000})  # micro-dollars
        await e.refused()
        reset = await e.post("reset", {"subject": "group_id=marketing"})
        assert reset["quotas"][0]["used"] == 0
        await e.request()

    env(body)


def test_a_dollar_change_picks_the_subjects_budget_among_its_quotas(env: Callable[..., None]) -> None:
    async def body(e: Env) -> None:
        quotas = (await e.get("group_id=marketing"))["quotas"]
        assert {q["quota"] for q in quotas} == {"rateLimits/llm/group_id=marketing", "budget/group_id/month"}
        got = await e.post("set", {"subject": "group_id=marketing", "limit_usd": 12.5})
        assert [q["quota"] for q in got["quotas"]] == ["budget/group_id/month"]
        assert got["quotas"][0]["limit"] == 12_500_000
        # Without dollars the change must name the quota; dollars for a request quota are a 400.
        several = await e.post("set", {"subject": "group_id=marketing", "limit": 5}, 400)
        assert several["error"]["param"] == "quota"
        wrong = {
            "subject": "group_id=marketing",
            "quota": "rateLimits/llm/group_id=marketing",
            "limit_usd": 1,
        }
        err = await e.post("set", wrong, 400)
        assert "counts usd_micros" in err["error"]["message"] and err["error"]["param"] == "quota"

    env(body, rate_limits=True)


@pytest.mark.parametrize(
    ("op", "change", "param", "message"),
    [
        ("set", {"limit": 5, "limit_usd": 5}, "limit_usd", "not both"),
        ("set", {"limit_usd": 0.0000001}, "limit_usd", "more decimals than a micro-dollar"),
        ("set", {"limit_usd": -1}, "limit_usd", "0 or more"),
        ("set", {"limit_usd": "12.50"}, "limit_usd", "is not dollars"),
        ("set", {"limit_usd": 2e9}, "limit_usd", "at most 1,000,000,000"),
        ("set", {}, "limit", "required"),
        ("adjust", {"delta_usd": True}, "delta_usd", "is not dollars"),
        ("adjust", {"delta_usd": None}, "delta_usd", "is not dollars"),
        ("adjust", {"delta_usd": -2e9}, "delta_usd", "at most"),
    ],
)
def test_bad_dollars_are_a_400_naming_the_field(
    env: Callable[..., None], op: str, change: dict[str, Any], param: str, message: str
) -> None:
    async def body(e: Env) -> None:
        got = await e.post(op, {"subject": "group_id=marketing", **change}, 400)
        assert got["error"]["param"] == param and message in got["error"]["message"], got

    env(body)


def test_budgets_match_only_single_key_subjects_with_a_budget(env: Callable[..., None]) -> None:
    async def body(e: Env) -> None:
        for subject in ("group_id=sales", "user_id=alice", "api_key_id=k-alice,group_id=marketing"):
            resp = await e.client.get("/v1/quotas", params={"subject": subject}, headers=AUTH)
            assert resp.status == 404, subject

    env(body)


def sample(t: runtime.Telemetry, name: str, **labels: str) -> float | None:
    full = {"quota": "budget/group_id/month", "period": "month", "unit": "usd", "api_key_id": "",
            "user_id": "", "group_id": "marketing", "model": "", "route": "", **labels}  # fmt: skip
    return t.metrics.registry.get_sample_value(f"agentgateway_quota_{name}", full)


def test_budget_gauges_are_in_dollars_at_each_decision_and_admin_change(
    env: Callable[..., None], telemetry: runtime.Telemetry
) -> None:
    async def body(e: Env) -> None:
        await e.request()
        assert sample(telemetry, "used") == 0.001023 and sample(telemetry, "limit") == 500
        await e.post("adjust", {"subject": "group_id=marketing", "delta_usd": 400})
        assert sample(telemetry, "used") == 400.001023
        assert sample(telemetry, "remaining") == pytest.approx(99.998977)
        await e.post("set", {"subject": "group_id=marketing", "limit_usd": 450})
        assert sample(telemetry, "limit") == 450
        # A refusal sets them too (nothing taken): the key's day, after its own override.
        await e.post("set", {"subject": "api_key_id=k-alice", "limit_usd": 0})
        await e.refused()
        key = {"quota": "budget/api_key_id/day", "period": "day", "group_id": "", "api_key_id": "k-alice"}
        assert sample(telemetry, "limit", **key) == 0 and sample(telemetry, "used", **key) == 0.001023
        # The refresh reads the exported budgets again (usage settled after the decision).
        [q] = e.ctx.manager().find(Subject.parse("group_id=marketing"), None, e.clock())
        await e.ctx.store.adjust([q.counter], [-400_000_000], e.clock())
        assert await e.ctx.manager().refresh() == 2
        assert sample(telemetry, "used") == 0.001023

    env(body)


def test_two_files_with_the_same_budget_are_one_quota(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(BUDGETS)
    files = [WatchedPolicy(tmp_path / n, parse=parse_budgets, what="budgets") for n in ("a.yaml", "b.yaml")]
    found = BudgetQuotas(lambda: files).find(Subject.parse("group_id=marketing"), NOW)
    assert [q.id for q in found] == ["budget/group_id/month"]
    assert found[0].counter.key == "budget:group_id=marketing:month:2027-01-01"
    assert found[0].counter.override == "ovr:budget:group_id=marketing:month"


# --- the CLI ------------------------------------------------------------------------------------


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    quotas_cli.add_parser(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(["quotas", *argv, "--admin-url", "http://x", "--token", "t"])


@pytest.mark.parametrize(
    ("argv", "sent"),
    [
        (("set", "group_id=marketing", "--usd", "12.50"), {"limit_usd": 12.5}),
        (("set", "group_id=marketing", "--usd", "$1,000"), {"limit_usd": 1000.0}),
        (("set", "group_id=marketing", "12500000"), {"limit": 12_500_000}),
        (("set", "group_id=marketing", "clear"), {"limit": None}),
        (("adjust", "group_id=marketing", "--usd", "-2.5"), {"delta_usd": -2.5}),
        (("adjust", "group_id=marketing", "-5000"), {"delta": -5000}),
    ],
)
def test_the_cli_sends_dollars_as_the_api_takes_them(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], sent: dict[str, Any]
) -> None:
    calls: list[dict[str, Any]] = []

    def fake(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        calls.append(body or {})
        return {"subject": "group_id=marketing", "quotas": []}

    monkeypatch.setattr(quotas_cli, "_call", fake)
    assert quotas_cli.run(cli_args(*argv)) == 0
    assert calls == [{"subject": "group_id=marketing", **sent}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("set", "group_id=marketing"), "give LIMIT or --usd"),
        (("set", "group_id=marketing", "5", "--usd", "5"), "give LIMIT or --usd"),
        (("adjust", "group_id=marketing", "--usd", "ten"), "is not an amount of dollars"),
        (("adjust", "group_id=marketing", "--usd", "nan"), "is not an amount of dollars"),
    ],
)
def test_the_cli_refuses_an_unclear_amount(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert quotas_cli.run(cli_args(*argv)) == 2
    assert message in capsys.readouterr().err


def test_the_cli_table_shows_budgets_in_dollars() -> None:
    row = {
        "quota": "budget/group_id/month", "unit": "usd_micros", "period": "month", "limit": 400_000_000,
        "configured": 500_000_000, "override": 400_000_000, "used": 12_345_678, "remaining": 387_654_322,
        "resets_in_seconds": 86400 * 3 + 7200, "shadow": False, "limit_usd": 400.0, "configured_usd": 500.0,
        "override_usd": 400.0, "used_usd": 12.345678, "remaining_usd": 387.654322,
    }  # fmt: skip
    text = quotas_cli.table({"subject": "group_id=marketing", "quotas": [row]})
    assert text.splitlines()[2].split() == [
        "budget/group_id/month", "usd", "month", "$400.00", "(override;", "configured", "$500.00)",
        "$12.345678", "$387.654322", "3d", "2h",
    ]  # fmt: skip
    assert quotas_cli._usd(1234.5) == "$1,234.50" and quotas_cli._usd(0.000125) == "$0.000125"
    assert quotas_cli._usd(0) == "$0.00"
