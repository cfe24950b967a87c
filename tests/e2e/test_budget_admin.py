"""Managing dollar budgets through the real Envoy: the admin API and `gateway quotas` set (in
dollars), adjust and reset a subject's budget, and the next request through Envoy sees it (a 429
budget_exceeded, or it passes, with the x-budget headers); an override holds into the next period
(the test clock); a ``"*"`` budget is changed for one key only; the budget gauges in dollars;
two gateways sharing one real Redis both see a change made through either one's admin API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    OPENAI_KEY,
    ROOT,
    Gateway,
    free_port,
    listener_config,
    provider_route,
    start_mock,
)
from tests.e2e.guardrail_helpers import metric
from tests.e2e.test_quotas import TOKEN, Admin
from tests.e2e.test_rate_limits import start
from tests.redis_server import start_redis

ALICE, BOB = "sk-gw-budadm-alice-0001", "sk-gw-budadm-bob-0002"
KEYS = [
    {"key": ALICE, "metadata": {"id": "k-alice", "user": "alice", "team": "marketing"}},
    {"key": BOB, "metadata": {"id": "k-bob", "user": "bob", "team": "sales"}},
]
BUDGETS = """\
timeZone: UTC
budgets:
  - {group_id: marketing, period: month, usd: 500}
  - {api_key_id: "*", period: day, usd: 5}
"""
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100}


def config(mock_port: int, budgets: Path, store: dict | None = None) -> dict:
    route = provider_route(
        "b", "/b", {"openAI": {}}, f"127.0.0.1:{mock_port}", OPENAI_KEY,
        apiKey={"keys": KEYS}, budgets={"file": str(budgets)},
    )  # fmt: skip
    cfg = listener_config([route])
    cfg["config"] |= {
        "adminApi": {"port": free_port(), "token": TOKEN},
        "cost": {"pricesFile": str(ROOT / "policies" / "prices.json")},
    }
    if store is not None:
        cfg["config"]["rateLimitStore"] = store
    return cfg


def chat(gw: Gateway, key: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/b/v1/chat/completions", json=HI, headers={"authorization": f"Bearer {key}"},
                      timeout=20)  # fmt: skip


def refused(resp: httpx.Response, scope: str) -> bool:
    """A 429 from the budget ``scope`` (``group_id=marketing month``)."""
    if resp.status_code != 429:
        return False
    err = resp.json()["error"]
    return err["code"] == "budget_exceeded" and err["message"].startswith(f"budget exceeded ({scope}: $")


def budget(admin: Admin, subject: str) -> dict:
    [row] = [q for q in admin.get(subject)["quotas"] if q["quota"].startswith("budget/")]
    return row


def test_set_adjust_and_reset_a_budget_through_the_admin_api_and_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = tmp_path / "clock"
    noon = 43200 - time.time() % 86400  # the test clock at midday UTC: no real midnight mid-test
    clock.write_text(str(noon))
    monkeypatch.setenv("GATEWAY_TEST_CLOCK_FILE", str(clock))
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    mock = start_mock()
    gw = start(tmp_path / "gw", config(mock.port, budgets), mock)
    admin = Admin(gw)
    try:
        first = chat(gw, ALICE)
        assert first.status_code == 200, first.text
        read = budget(admin, "group_id=marketing")
        assert (read["quota"], read["unit"], read["period"]) == (
            "budget/group_id/month",
            "usd_micros",
            "month",
        )
        assert (read["limit"], read["limit_usd"], read["override"]) == (500_000_000, 500.0, None)
        assert 0 < read["used"] < 2000 and read["used_usd"] == read["used"] / 1e6

        # A lower budget: the next request does not fit (a reservation is ~$0.001); sales' bob passes.
        got = admin.post("set", {"subject": "group_id=marketing", "limit_usd": 0.0005})
        assert [(q["quota"], q["limit"], q["override_usd"]) for q in got["quotas"]] == [
            ("budget/group_id/month", 500, 0.0005)
        ]
        over = chat(gw, ALICE)
        assert refused(over, "group_id=marketing month"), over.text
        assert over.headers["x-budget-limit"] == "0.0005" and over.headers["x-should-retry"] == "false"
        assert chat(gw, BOB).status_code == 200

        # The next month on the test clock: a new period, and the override still holds.
        clock.write_text(str(noon + read["resets_in_seconds"] + 5))
        moved = budget(admin, "group_id=marketing")
        assert moved["used"] == 0 and moved["period_end"] > read["period_end"]
        assert refused(chat(gw, ALICE), "group_id=marketing month")
        assert metric(gw, "agentgateway_quota_limit", quota="budget/group_id/month", unit="usd",
                      group_id="marketing") == 0.0005  # fmt: skip

        # Cleared: the file's $500 again. Adjust charges it (by hand) past the budget, a credit
        # gives it back, and a reset starts the period again.
        admin.post("set", {"subject": "group_id=marketing", "limit_usd": None})
        assert chat(gw, ALICE).status_code == 200
        admin.post("adjust", {"subject": "group_id=marketing", "delta_usd": 500})
        assert refused(chat(gw, ALICE), "group_id=marketing month")
        admin.post("adjust", {"subject": "group_id=marketing", "delta_usd": -1.25})
        assert chat(gw, ALICE).status_code == 200
        admin.post("adjust", {"subject": "group_id=marketing", "delta_usd": 10})
        assert refused(chat(gw, ALICE), "group_id=marketing month")
        assert admin.post("reset", {"subject": "group_id=marketing"})["quotas"][0]["used"] == 0
        ok = chat(gw, ALICE)
        assert ok.status_code == 200 and ok.headers["x-budget-scope"] == "api_key_id=k-alice day"
        used = metric(gw, "agentgateway_quota_used", quota="budget/group_id/month", group_id="marketing")
        assert 0 < used < 0.002  # dollars: this request's reservation

        # The "*" day budget of one key: alice's key to $0, bob's key keeps its $5.
        done = admin.cli("set", "api_key_id=k-alice", "--usd", "0")
        assert done.returncode == 0, done.stderr
        assert (
            "budget/api_key_id/day  usd" in done.stdout
            and "$0.00 (override; configured $5.00)" in done.stdout
        )
        assert refused(chat(gw, ALICE), "api_key_id=k-alice day")
        bob = chat(gw, BOB)
        assert bob.status_code == 200 and bob.headers["x-budget-limit"] == "5"
        assert admin.cli("set", "api_key_id=k-alice", "clear").returncode == 0
        assert chat(gw, ALICE).status_code == 200

        # The CLI in dollars on marketing: charge, show, credit, reset.
        assert admin.cli("adjust", "group_id=marketing", "--usd", "499.9995").returncode == 0
        assert refused(chat(gw, ALICE), "group_id=marketing month")  # less than a reservation left
        shown = admin.cli("show", "group_id=marketing", "--format", "json", admin_url=True)
        assert shown.returncode == 0, shown.stderr
        [row] = [q for q in json.loads(shown.stdout)["quotas"] if q["quota"] == "budget/group_id/month"]
        assert 499.9995 < row["used_usd"] < 500 and row["used"] == round(row["used_usd"] * 1e6)
        assert admin.cli("adjust", "group_id=marketing", "--usd", "-100").returncode == 0
        assert chat(gw, ALICE).status_code == 200
        table = admin.cli("reset", "group_id=marketing")
        assert table.returncode == 0 and "$500.00" in table.stdout, table.stdout
        both = admin.cli("set", "group_id=marketing", "5", "--usd", "5")
        assert both.returncode == 2 and "give LIMIT or --usd" in both.stderr
        fine = admin.cli("set", "group_id=marketing", "--usd", "0.0000001")
        assert fine.returncode == 2 and "more decimals than a micro-dollar" in fine.stderr
    finally:
        gw.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def test_two_gateways_sharing_redis_both_see_a_budget_change_made_through_either(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis")
    mock = start_mock()
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    gateways: list[Gateway] = []
    try:
        store = {"redis": {"url": redis.url, "keyPrefix": f"ba{id(tmp_path)}:"}}
        for n in range(2):
            gateways.append(start(tmp_path / f"gw{n}", config(mock.port, budgets, store), mock, 1))
        a, b = gateways
        admin_a, admin_b = Admin(a), Admin(b)
        assert [chat(g, ALICE).status_code for g in (a, b)] == [200, 200]
        admin_a.post("set", {"subject": "group_id=marketing", "limit_usd": 0.001})
        assert all(refused(chat(g, ALICE), "group_id=marketing month") for g in (a, b))
        assert budget(admin_b, "group_id=marketing")["override_usd"] == 0.001  # b reads what a set
        admin_b.post("set", {"subject": "group_id=marketing", "limit_usd": None})
        assert [chat(g, ALICE).status_code for g in (a, b)] == [200, 200]
        admin_b.post("adjust", {"subject": "group_id=marketing", "delta_usd": 500})
        assert refused(chat(a, ALICE), "group_id=marketing month")
        assert admin_a.cli("reset", "group_id=marketing", admin_url=True).returncode == 0
        assert [chat(g, ALICE).status_code for g in (b, a)] == [200, 200]
        spent = budget(admin_b, "group_id=marketing")["used"]
        assert 0 < spent < 5000  # the two requests since the reset, settled by both replicas
    finally:
        for g in gateways:
            g.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
        redis.stop()
