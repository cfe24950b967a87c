"""Dollar budgets in process: periods on a calendar, the policy file, and the stage's reserve,
refuse and settle (streams, failures, disconnects, a period boundary, concurrency, the store down)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc import gateway, tokens
from extproc.config.loader import ConfigError, parse_text
from extproc.config.model import GlobalConfig
from extproc.errors import GatewayError
from extproc.limits import clock as test_clock
from extproc.limits.budget_file import parse_budgets
from extproc.limits.budget_reply import usd
from extproc.limits.context import LimitsContext
from extproc.limits.periods import period_of, zone
from extproc.limits.store import MemoryStore, StoreUnavailable
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.stage import Denied, request_side
from extproc.pipeline.stages.budget import BudgetStage
from extproc.telemetry import runtime
from extproc.telemetry.prices import Price
from extproc.translate.usage import Usage

ROOT = Path(__file__).resolve().parents[2]
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100}
ALICE = {"api_key_id": "k-alice", "user_id": "alice", "group_id": "marketing"}
GPT4O = Price(2.5e-6, 1e-5)  # per token: 2.5 and 10 micro-dollars
# "Hello!" is 9 prompt tokens as estimated; 100 output tokens allowed.
HI_RESERVED = 9 * 2.5 + 100 * 10  # 1022.5 micro-dollars -> 1023


def at(text: str, tz: str = "UTC") -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone(tz)).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    """A price table for gpt-4o, installed as the process's telemetry for the test."""
    before = runtime._current
    telemetry = runtime.Telemetry.build(GlobalConfig())
    telemetry.prices.replace({"gpt-4o": GPT4O})
    runtime.install(telemetry)
    yield
    runtime._current = before


# --- periods ----------------------------------------------------------------------------------


def test_a_day_is_the_local_day_and_the_one_a_clock_change_shortens_has_23_hours() -> None:
    berlin = zone("Europe/Berlin")
    p = period_of("day", berlin, at("2026-06-10T23:30", "Europe/Berlin"))
    assert p.name == "2026-06-10"
    assert p.start == at("2026-06-10T00:00", "Europe/Berlin") and p.end - p.start == 86400
    spring = period_of("day", berlin, at("2026-03-29T12:00", "Europe/Berlin"))
    assert spring.end - spring.start == 23 * 3600
    # The same instant is another day in another zone.
    assert period_of("day", zone("America/New_York"), at("2026-06-11T02:00")).name == "2026-06-10"


def test_weeks_start_on_monday_and_months_on_the_first_across_a_year_end() -> None:
    utc = zone("UTC")
    week = period_of("week", utc, at("2026-12-03T10:00"))  # a Thursday
    assert week.name == "2026-11-30" and week.end == at("2026-12-07T00:00")
    month = period_of("month", utc, at("2026-12-31T23:59:59"))
    assert month.name == "2026-12-01" and month.end == at("2027-01-01T00:00")
    assert period_of("month", utc, month.end).name == "2027-01-01"  # the end is the next one's start


# --- the file ---------------------------------------------------------------------------------


def test_the_shipped_budgets_file_loads() -> None:
    f = parse_budgets((ROOT / "policies" / "budgets.yaml").read_text(), "budgets.yaml")
    assert len(f) == 5 and f.defaults.unpriced == 20_000 and f.defaults.max_tokens == 4096
    found = f.match({"api_key_id": "batch-importer", "user_id": "u", "group_id": "marketing"})
    # The importer's own budgets replace the "*" one; the user's and the group's apply too.
    assert [(b.scope, b.period, b.limit) for b, _ in found] == [
        ("api_key_id", "day", 50_000_000), ("api_key_id", "week", 200_000_000),
        ("user_id", "week", 20_000_000), ("group_id", "month", 500_000_000),
    ]  # fmt: skip
    assert found[3][0].tz.key == "America/New_York" and found[0][0].tz.key == "Europe/Berlin"
    assert [b.limit for b, v in f.match({"api_key_id": "k1"}) if v == "k1"] == [5_000_000]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("budgets:\n  - group_id: a\n    period: year\n    usd: 1\n", 3, "budgets[0].period", "period is one of"),
        ("budgets:\n  - group_id: a\n    user_id: b\n    period: day\n    usd: 1\n", 2, "budgets[0]", "exactly one"),
        ("budgets:\n  - group_id: a\n    period: day\n    usd: -1\n", 4, "budgets[0].usd", "0 or more"),
        ("budgets:\n  - group_id: a\n    period: day\n", 2, "budgets[0].usd", "needs usd"),
        ("budgets:\n  - {group_id: a, period: day, usd: 10000000000}\n", 2, "budgets[0].usd", "at most 1,000,000,000"),
        ("timeZone: Mars/Olympus\nbudgets: []\n", 1, "timeZone", "unknown time zone"),
        ("budgets:\n  - group_id: a\n    period: day\n    usd: 1\n    dollars: 2\n", 5, "budgets[0].dollars",
         "unknown field"),
        ("defaults: {maxTokens: 0}\n", 1, "defaults.maxTokens", "1 or more"),
        ("budgets:\n  - {group_id: a, period: day, usd: 1}\n  - {group_id: a, period: day, usd: 2}\n", 3,
         "budgets[1]", "duplicate budget"),
    ],
)  # fmt: skip
def test_file_errors_name_file_line_and_field(text: str, line: int, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_budgets(text, "budgets.yaml")
    issue = err.value.issues[0]
    assert (issue.file, issue.line, issue.field) == ("budgets.yaml", line, field), issue
    assert message in issue.message


def test_output_limit_reads_the_request_as_the_estimate_does() -> None:
    assert tokens.output_limit("completions", {"max_tokens": 50, "n": 2}) == (50, 2)
    assert tokens.output_limit("completions", {"max_completion_tokens": 70, "max_tokens": 5}) == (70, 1)
    assert tokens.output_limit("completions", {}) == (None, 1)
    assert tokens.output_limit("embeddings", {"input": "x"}) == (0, 1)


# --- the stage --------------------------------------------------------------------------------


def route_config(policies: dict[str, Any]) -> gateway.Gateway:
    route = {
        "name": "r",
        "matches": [{"path": {"pathPrefix": "/p"}}],
        "backends": [{"ai": {"name": "openai", "provider": {"openAI": {}}, "hostOverride": "127.0.0.1:9"}}],
        "policies": policies,
    }
    return gateway.build(
        parse_text(yaml.safe_dump({"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]})).config
    )


def stage_with(
    tmp: Path, text: str, now: float = 1_800_000_000.0, store: Any = None, **policy: Any
) -> tuple[BudgetStage, Clock]:
    (tmp / "budgets.yaml").write_text(text)
    gw = route_config({"budgets": {"file": "budgets.yaml", **policy}})
    ctx = LimitsContext(gw, tmp, store=store or MemoryStore())
    stage = ctx.budget_stage_for(gw.routes[0])
    assert stage is not None
    clock = Clock(now)
    stage.clock = clock
    return stage, clock


def exchange(
    stage: BudgetStage, body: dict[str, Any] | None = None, identity: dict | None = None
) -> Exchange:
    ex = Exchange("id", stage.route, "completions", "POST", "/p/v1/chat/completions")
    ex.llm = LLMRequest("completions", dict(body or HI))
    ex.identity = dict(ALICE if identity is None else identity)
    ex.upstream = stage.route.direct_upstream
    return ex


async def settle(stage: BudgetStage, ex: Exchange, usage: Usage | None, outcome: str = "ok") -> None:
    ex.usage, ex.outcome = usage, outcome
    await stage.on_complete(ex)
    await stage.drain()


def spent(stage: BudgetStage) -> dict[str, int]:
    store = stage.store
    assert isinstance(store, MemoryStore)
    return {k: v[0] for k, v in store.windows.items()}


ONE_CENT_A_DAY = "budgets:\n  - {group_id: marketing, period: day, usd: 0.01}\n"
USED = Usage(input_tokens=9, output_tokens=20)  # 9 * 2.5 + 20 * 10 = 222.5 -> 223 micro-dollars


def test_a_request_reserves_its_priced_estimate_and_settles_with_its_cost(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)

    async def run() -> Exchange:
        ex = exchange(stage)
        await request_side(stage, ex)
        assert spent(stage) == {"budget:group_id=marketing:day:2027-01-15": 1023}
        assert ex.response_headers == {
            "x-budget-limit": "0.01", "x-budget-remaining": usd(10_000 - 1023),
            "x-budget-reset": ex.response_headers["x-budget-reset"], "x-budget-scope": "group_id=marketing day",
        }  # fmt: skip
        await settle(stage, ex, USED)
        return ex

    ex = asyncio.run(run())
    assert list(spent(stage).values()) == [223]
    assert ex.budget == {
        "decision": "allow", "budgets": ["group_id=marketing day"], "reserved_usd": 0.001023, "charged_usd": 0.000223,
    }  # fmt: skip


def test_over_budget_is_a_429_with_the_budget_headers_and_costs_nothing(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, "budgets:\n  - {group_id: marketing, period: day, usd: 0.0019}\n")

    async def run() -> Denied:
        first = exchange(stage)
        await request_side(stage, first)
        await settle(stage, first, Usage(input_tokens=9, output_tokens=90))  # 922.5 -> 923
        second = exchange(stage)
        with pytest.raises(Denied) as err:
            await request_side(stage, second)  # 1023 more would not fit in the 977 left
        assert second.budget is not None and second.budget["decision"] == "deny"
        return err.value

    denied = asyncio.run(run())
    assert denied.status == 429 and denied.code == "budget_exceeded"
    assert "budget exceeded (group_id=marketing day: $0.0019)" in denied.message
    assert "may cost up to $0.001023 and $0.000977 is left" in denied.message
    headers = denied.headers or {}
    assert headers["x-budget-remaining"] == "0.000977" and headers["x-should-retry"] == "false"
    assert int(headers["retry-after"]) == int(headers["x-budget-reset"]) > 0
    assert list(spent(stage).values()) == [923]  # the refused request took nothing


def test_every_budget_that_applies_must_have_room(tmp_path: Path) -> None:
    text = (
        "budgets:\n  - {api_key_id: '*', period: day, usd: 1}\n"
        "  - {group_id: marketing, period: month, usd: 0.0015}\n"
    )
    stage, _ = stage_with(tmp_path, text)

    async def run() -> None:
        first = exchange(stage)
        await request_side(stage, first)  # 1023 in both
        assert first.response_headers["x-budget-scope"] == "group_id=marketing month"  # the tighter one
        with pytest.raises(Denied):
            await request_side(stage, exchange(stage))  # the key's budget has room, the group's not
        await request_side(stage, exchange(stage, identity={"api_key_id": "k-bob"}))  # bob: key only

    asyncio.run(run())
    assert spent(stage) == {
        "budget:api_key_id=k-alice:day:2027-01-15": 1023,
        "budget:group_id=marketing:month:2027-01-01": 1023,
        "budget:api_key_id=k-bob:day:2027-01-15": 1023,
    }


@pytest.mark.parametrize(
    ("usage", "outcome", "charged"),
    [
        (None, "provider_error", 0),  # no answer: released
        (None, "gateway_error", 0),
        (None, "client_disconnected", 0),  # the client left before the answer began
        (None, "ok", 1023),  # answered without usage: the reservation stands
        (None, "stream_cut", 1023),  # part of a stream reached the client: so does it
        (Usage(input_tokens=9, output_tokens=0), "client_disconnected", 23),  # usage was reported
        (Usage(input_tokens=9, output_tokens=3), "stream_cut", 53),
        (Usage(input_tokens=9, output_tokens=300), "ok", 3023),  # more than reserved: charged all
    ],
)
def test_settling_by_outcome(tmp_path: Path, usage: Usage | None, outcome: str, charged: int) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)

    async def run() -> None:
        ex = exchange(stage)
        await request_side(stage, ex)
        await settle(stage, ex, usage, outcome)
        assert ex.budget is not None and ex.budget["charged_usd"] == charged / 1e6

    asyncio.run(run())
    assert list(spent(stage).values()) == [charged]


def test_a_request_settles_in_the_period_it_reserved_in(tmp_path: Path) -> None:
    stage, clock = stage_with(tmp_path, ONE_CENT_A_DAY, now=at("2027-01-15T23:59:59"))

    async def run() -> None:
        late = exchange(stage)
        await request_side(stage, late)  # the 15th's counter
        clock.now = at("2027-01-16T00:00:01")  # the answer comes after midnight
        fresh = exchange(stage)
        await request_side(stage, fresh)  # the 16th's counter: the 15th's spend does not count
        assert fresh.response_headers["x-budget-remaining"] == usd(10_000 - 1023)
        await settle(stage, late, USED)
        await settle(stage, fresh, USED)

    asyncio.run(run())
    # The late answer did not land in the 16th (no double counting); the 15th has ended.
    assert spent(stage)["budget:group_id=marketing:day:2027-01-16"] == 223


def test_a_burst_in_process_spends_no_more_than_the_budget(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, "budgets:\n  - {user_id: '*', period: day, usd: 0.05}\n")

    async def one() -> str:
        ex = exchange(stage)
        try:
            await request_side(stage, ex)
        except Denied:
            return "denied"
        await asyncio.sleep(0.01)  # the provider: every reservation is held at once
        await settle(stage, ex, Usage(input_tokens=9, output_tokens=100))
        return "ok"

    async def run() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(200)))

    results = asyncio.run(run())
    assert results.count("ok") == 48  # 50,000 // 1,023 reservations fit at once
    assert list(spent(stage).values()) == [48 * 1023]


def test_unpriced_models_are_refused_unless_the_file_prices_them_flat(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)
    body = {**HI, "model": "no-such-model"}

    async def refused() -> Denied:
        ex = exchange(stage, body)
        with pytest.raises(Denied) as err:
            await request_side(stage, ex)
        return err.value

    denied = asyncio.run(refused())
    assert denied.status == 403 and denied.code == "model_not_priced" and "no-such-model" in denied.message
    flat, _ = stage_with(tmp_path, "defaults: {unpricedUsd: 0.004}\n" + ONE_CENT_A_DAY)

    async def charged() -> None:
        ex = exchange(flat, body)
        await request_side(flat, ex)
        await settle(flat, ex, USED)  # usage, but no price: the flat amount

    asyncio.run(charged())
    assert list(spent(flat).values()) == [4000]


def test_callers_without_a_matching_budget_and_requests_that_generate_nothing_pass_untouched(
    tmp_path: Path,
) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)

    async def run() -> None:
        anonymous = exchange(stage, identity={})
        await request_side(stage, anonymous)
        assert anonymous.budget is None and not anonymous.response_headers
        listing = exchange(stage)
        listing.llm = None  # GET /v1/models
        await request_side(stage, listing)
        assert listing.budget is None

    asyncio.run(run())
    assert spent(stage) == {}


def test_a_request_without_max_tokens_reserves_the_files_default(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, "defaults: {maxTokens: 200}\n" + ONE_CENT_A_DAY)
    body = {k: v for k, v in HI.items() if k != "max_tokens"}

    async def run() -> None:
        await request_side(stage, exchange(stage, body))

    asyncio.run(run())
    assert list(spent(stage).values()) == [2023]  # 9 * 2.5 + 200 * 10


class DownStore(MemoryStore):
    in_process = True

    async def reserve(self, counters: Any, now: float) -> Any:
        raise StoreUnavailable("connection refused")


@pytest.mark.parametrize(("mode", "decision"), [("failClosed", "fail_closed"), ("failOpen", "fail_open")])
def test_the_store_down_follows_the_failure_mode(tmp_path: Path, mode: str, decision: str) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY, store=DownStore(), failureMode=mode)
    ex = exchange(stage)

    async def run() -> None:
        await request_side(stage, ex)

    if mode == "failClosed":
        with pytest.raises(GatewayError) as err:
            asyncio.run(run())
        assert err.value.status == 503 and err.value.code == "budget_unavailable"
    else:
        asyncio.run(run())
    assert ex.budget == {"decision": decision}


def test_an_edited_file_is_in_force_after_a_reload(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)

    async def run() -> None:
        (tmp_path / "budgets.yaml").write_text(
            "budgets:\n  - {group_id: marketing, period: day, usd: 0.0001}\n"
        )
        assert await stage.policy.refresh()
        with pytest.raises(Denied):
            await request_side(stage, exchange(stage))

    asyncio.run(run())


def test_a_reloaded_file_names_its_own_counters_for_a_caller_seen_before(tmp_path: Path) -> None:
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)

    async def run() -> list[str]:
        scopes = []
        for period in ("day", "month"):
            text = f"budgets:\n  - {{group_id: marketing, period: {period}, usd: 0.01}}\n"
            (tmp_path / "budgets.yaml").write_text(text)
            assert period == "day" or await stage.policy.refresh()
            ex = exchange(stage)
            await request_side(stage, ex)
            await settle(stage, ex, USED)
            scopes.append(ex.response_headers["x-budget-scope"])
        return scopes

    assert asyncio.run(run()) == ["group_id=marketing day", "group_id=marketing month"]
    assert spent(stage) == {
        "budget:group_id=marketing:day:2027-01-15": 223, "budget:group_id=marketing:month:2027-01-01": 223,
    }  # fmt: skip


def test_the_test_clock_adds_the_offset_in_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.delenv(test_clock.ENV, raising=False)
    assert test_clock.budget_clock() is time.time  # off: the wall clock itself
    offset = tmp_path / "clock"
    monkeypatch.setenv(test_clock.ENV, str(offset))
    now = test_clock.budget_clock()
    assert abs(now() - time.time()) < 1  # no file yet: no offset
    offset.write_text("86400\n")
    assert abs(now() - time.time() - 86400) < 1
    offset.write_text("not a number")
    assert abs(now() - time.time()) < 1


def test_the_readmes_example_is_the_shipped_file() -> None:
    section = (ROOT / "README.md").read_text().split("### Budgets\n", 1)[1].split("\n### ", 1)[0]
    example = next(b for b in section.split("```yaml\n")[1:] if b.startswith("timeZone:")).split("```")[0]
    shipped = parse_budgets((ROOT / "policies" / "budgets.yaml").read_text(), "budgets.yaml")
    documented = parse_budgets(example, "README.md")
    assert documented.defaults == shipped.defaults
    assert documented.exact.keys() == shipped.exact.keys() and documented.each.keys() == shipped.each.keys()
    assert [(b.limit, b.period, b.tz) for v in documented.exact.values() for b in v] == [
        (b.limit, b.period, b.tz) for v in shipped.exact.values() for b in v
    ]


def test_check_reports_a_bad_budgets_file(tmp_path: Path) -> None:
    from extproc.cli import _rate_limit_file_problems

    (tmp_path / "budgets.yaml").write_text("budgets:\n  - {team: a, period: day, usd: 1}\n")
    gw = route_config({"budgets": {"file": "budgets.yaml"}})
    problems = _rate_limit_file_problems(gw, tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{tmp_path / 'budgets.yaml'}:2: budgets[0].team: unknown field 'team'")
    assert "exactly one of api_key_id, user_id, group_id" in problems[1]


# --- a reservation decide never took ------------------------------------------------------------


def test_a_reservation_no_decide_took_is_released_and_one_not_taken_gives_nothing_back(
    tmp_path: Path,
) -> None:
    """A stage before it refused (the rate limits): on_complete takes the answer itself. Taken, it
    is released; not taken, nothing is given back (another request's hold stays)."""
    stage, _ = stage_with(tmp_path, "budgets:\n  - {group_id: marketing, period: day, usd: 0.0015}\n")

    async def run() -> list[int]:
        seen = []
        refused_first = exchange(stage)
        await stage.on_request(refused_first)  # 1023 reserved; no decide
        seen.append(sum(spent(stage).values()))
        await settle(stage, refused_first, None, "gateway_error")
        seen.append(sum(spent(stage).values()))
        held = exchange(stage)
        await request_side(stage, held)  # 1023 of 1500, in flight
        no_room = exchange(stage)
        await stage.on_request(no_room)  # 1023 more does not fit: not taken; no decide
        await settle(stage, no_room, None, "gateway_error")
        seen.append(sum(spent(stage).values()))
        return seen

    assert asyncio.run(run()) == [1023, 0, 1023]


class SlowStore(MemoryStore):
    """Decides at once, answers after a pause: a stream can end while decide waits."""

    def reserve(self, counters: Any, now: float) -> Any:
        got = self._reserve(counters, now)

        async def later() -> Any:
            await asyncio.sleep(0.05)
            return got

        return later()


def test_a_stream_that_ends_while_decide_waits_gives_nothing_back(tmp_path: Path) -> None:
    """Cancelled mid-answer, the stage cannot know what the store took: it is left charged (the
    safe side for money), and a later on_complete must not release another request's hold."""
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY, store=SlowStore())

    async def run() -> int:
        ex = exchange(stage)
        await stage.on_request(ex)
        task = asyncio.get_running_loop().create_task(stage.decide(ex))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle(stage, ex, None, "client_disconnected")
        return sum(spent(stage).values())

    assert asyncio.run(run()) == 1023


def test_an_unpriced_model_is_refused_in_decide_after_the_rate_limits_answer(tmp_path: Path) -> None:
    """on_request only notes it: a rate limit that refuses (its decide runs first) is the answer."""
    stage, _ = stage_with(tmp_path, ONE_CENT_A_DAY)

    async def run() -> Exchange:
        ex = exchange(stage, {**HI, "model": "no-such-model"})
        await stage.on_request(ex)
        assert ex.budget is None and spent(stage) == {}
        with pytest.raises(Denied) as err:
            await stage.decide(ex)
        assert err.value.code == "model_not_priced"
        await settle(stage, ex, None, "gateway_error")
        return ex

    assert asyncio.run(run()).budget == {"decision": "unpriced"}
    assert spent(stage) == {}
