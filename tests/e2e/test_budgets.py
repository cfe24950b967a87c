"""Dollar budgets through the real Envoy, with identities from the real authz and prices from the
shipped price table: reserve and settle (streams, and clients that leave before or during the
answer), the 429 in both client APIs, a period rollover on the test clock, the decisions in
metrics and the log line; and a burst of 200 concurrent requests from three replicas sharing one
real Redis, which spends no more than the budget plus one reservation."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    ROOT,
    Gateway,
    listener_config,
    provider_route,
    start_mock,
)
from tests.e2e.guardrail_helpers import metric, record_of, usage_record
from tests.e2e.test_rate_limits import start
from tests.redis_server import start_redis

ALICE, BOB, BURST = "sk-gw-budget-alice-0001", "sk-gw-budget-bob-0002", "sk-gw-budget-burst-0003"
KEYS = [
    {"key": ALICE, "metadata": {"id": "k-alice", "user": "alice", "team": "marketing"}},
    {"key": BOB, "metadata": {"id": "k-bob", "user": "bob"}},
    {"key": BURST, "metadata": {"id": "k-burst", "user": "burst"}},
]
BUDGETS = """\
timeZone: UTC
budgets:
  - {group_id: marketing, period: day, usd: 0.05}
  - {user_id: bob, period: day, usd: 0.004}
  - {api_key_id: k-burst, period: month, usd: 0.01}
"""
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100}
WORDY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "word " * 100}], "max_tokens": 10}
PRICES = str(ROOT / "policies" / "prices.json")


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def routes(mock_port: int, budgets: Path) -> list[dict]:
    host = f"127.0.0.1:{mock_port}"
    policy = {"apiKey": {"keys": KEYS}, "budgets": {"file": str(budgets)}}
    return [
        provider_route("b", "/b", {"openAI": {}}, host, OPENAI_KEY, **policy),
        provider_route("ba", "/ba", {"anthropic": {}}, host, ANTHROPIC_KEY, **policy),
    ]


def config(mock_port: int, budgets: Path, **global_: Any) -> dict:
    cfg = listener_config(routes(mock_port, budgets))
    cfg["config"] |= {"cost": {"pricesFile": PRICES}, **global_}
    return cfg


def micro(usd: float) -> int:
    return math.ceil(round(usd * 1e6, 6))


def remaining(resp: httpx.Response) -> int:
    return round(float(resp.headers["x-budget-remaining"]) * 1e6)


def budget_of(gw: Gateway, resp: httpx.Response) -> dict[str, Any]:
    return record_of(gw, resp)["budget"]  # type: ignore[no-any-return]


def settled(gw: Gateway, since: int, timeout: float = 10.0) -> list[dict]:
    """The usage records after the first ``since`` lines of extproc's log, once a new one is there."""
    log = gw.stack.workdir / "extproc.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")][since:]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def record_count(gw: Gateway) -> int:
    return sum(1 for ln in (gw.stack.workdir / "extproc.log").read_text().splitlines() if ln.startswith("{"))


def test_budgets_reserve_settle_refuse_and_renew_through_envoy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = tmp_path / "clock"
    noon = 43200 - time.time() % 86400  # the test clock starts at midday UTC: no midnight mid-test
    clock.write_text(str(noon))
    monkeypatch.setenv("GATEWAY_TEST_CLOCK_FILE", str(clock))
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    mock = start_mock()
    gw = start(tmp_path / "gw", config(mock.port, budgets), mock)
    try:
        url = gw.url + "/b/v1/chat/completions"
        # A passing request carries the budget's state while its reservation is held.
        first = httpx.post(url, json=HI, headers=auth(ALICE), timeout=20)
        assert first.status_code == 200, first.text
        assert first.headers["x-budget-limit"] == "0.05"
        assert first.headers["x-budget-scope"] == "group_id=marketing day"
        reserved = 50_000 - remaining(first)
        assert 1000 < reserved < 1100  # ~9 prompt tokens at $2.50/M + 100 at $10/M
        rec = record_of(gw, first)
        assert rec["budget"]["decision"] == "allow" and rec["budget"]["reserved_usd"] == reserved / 1e6
        assert rec["budget"]["charged_usd"] == micro(rec["cost_usd"]) / 1e6  # settled with the cost
        spent = micro(rec["cost_usd"])

        # A stream settles with the usage of its last event, not its reservation.
        body = {**HI, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", url, json=body, headers=auth(ALICE), timeout=20) as resp:
            assert resp.status_code == 200
            assert remaining(resp) == 50_000 - spent - reserved
            assert "[DONE]" in "".join(resp.iter_text())
        streamed = usage_record(gw, resp.headers["x-gateway-request-id"])
        assert streamed["stream"] and streamed["budget"]["charged_usd"] == micro(streamed["cost_usd"]) / 1e6
        spent += micro(streamed["cost_usd"])
        probe = httpx.post(url, json=HI, headers=auth(ALICE), timeout=20)
        assert remaining(probe) == 50_000 - spent - reserved
        spent += micro(record_of(gw, probe)["cost_usd"])

        # A client that leaves before the answer begins: its reservation is released.
        before = record_count(gw)
        slow = {**auth(ALICE), "x-mock-delay-ms": "2000"}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url, json=HI, headers=slow, timeout=0.5)
        gone = settled(gw, before)
        assert [r["outcome"] for r in gone] == ["client_disconnected"]
        assert gone[0]["budget"]["charged_usd"] == 0

        # A client that leaves mid-stream is charged what the provider reported (Anthropic's
        # message_start has the prompt's tokens), not the whole reservation.
        before = record_count(gw)
        cut = {**HI, "model": "claude-3-5-haiku-latest", "stream": True}
        slowly = {**auth(ALICE), "x-mock-chunk-delay-ms": "400"}
        with httpx.stream(
            "POST", gw.url + "/ba/v1/chat/completions", json=cut, headers=slowly, timeout=20
        ) as r:
            assert r.status_code == 200
            next(r.iter_bytes())
        left = settled(gw, before)
        assert [x["outcome"] for x in left] == ["stream_cut"], left
        assert left[0]["input_tokens"] > 0
        charged = left[0]["budget"]["charged_usd"]
        assert charged == micro(left[0]["cost_usd"]) / 1e6 < left[0]["budget"]["reserved_usd"]
        spent += micro(left[0]["cost_usd"])
        probe = httpx.post(url, json=HI, headers=auth(ALICE), timeout=20)
        assert remaining(probe) == 50_000 - spent - reserved  # nothing else held or lost

        # Bob's $0.004 a day runs out: a 429 in the client API's shape, with the budget's headers.
        answers = []
        for _ in range(20):
            answers.append(httpx.post(url, json=WORDY, headers=auth(BOB), timeout=20))
            if answers[-1].status_code != 200:
                break
        refused = answers[-1]
        assert len(answers) > 2 and refused.status_code == 429, [a.status_code for a in answers]
        err = refused.json()["error"]
        assert err["code"] == "budget_exceeded" and err["type"] == "rate_limit_error"
        assert err["message"].startswith("budget exceeded (user_id=bob day: $0.004)")
        assert refused.headers["x-should-retry"] == "false"
        assert (
            refused.headers["x-budget-limit"] == "0.004"
            and refused.headers["x-budget-scope"] == "user_id=bob day"
        )
        reset = int(refused.headers["x-budget-reset"])
        assert 43000 < reset <= 43200 and int(refused.headers["retry-after"]) == reset  # the test clock
        messages = httpx.post(
            gw.url + "/b/v1/messages", json={**WORDY, "max_tokens": 10}, headers=auth(BOB), timeout=20
        )
        assert messages.status_code == 429
        assert messages.json()["error"]["type"] == "rate_limit_error"  # Anthropic's error shape
        assert budget_of(gw, refused)["decision"] == "deny"
        assert (
            len([r for r in gw.mock.requests() if "word word" in json.dumps(r["body"])]) == len(answers) - 1
        )

        # The next day (on the test clock): a new period, a new counter, the whole budget again.
        clock.write_text(str(noon + reset + 5))
        renewed = httpx.post(url, json=WORDY, headers=auth(BOB), timeout=20)
        assert renewed.status_code == 200, renewed.text
        assert 4000 - remaining(renewed) == round(budget_of(gw, renewed)["reserved_usd"] * 1e6)
        assert 86400 - 10 <= int(renewed.headers["x-budget-reset"]) <= 86400

        assert metric(gw, "agentgateway_budget_decisions_total", route="b", decision="allow") >= 6
        assert metric(gw, "agentgateway_budget_decisions_total", route="b", decision="deny") == 2
    finally:
        gw.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def test_a_burst_from_three_replicas_sharing_redis_spends_no_more_than_the_budget_plus_one_reservation(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path / "redis")
    mock = start_mock()
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    prefix = f"e2e{id(tmp_path)}:"
    gateways: list[Gateway] = []
    try:
        for n in range(3):
            store = {"rateLimitStore": {"redis": {"url": server.url, "keyPrefix": prefix}}}
            gateways.append(start(tmp_path / f"replica{n}", config(mock.port, budgets, **store), mock, 1))
        headers = {**auth(BURST), "x-mock-delay-ms": "200"}  # every reservation is held at once

        def one(n: int) -> httpx.Response:
            with httpx.Client(timeout=30) as client:
                return client.post(
                    gateways[n % 3].url + "/b/v1/chat/completions", json=WORDY, headers=headers
                )

        with ThreadPoolExecutor(max_workers=200) as pool:
            answers = list(pool.map(one, range(200)))
        codes = [a.status_code for a in answers]
        assert codes.count(200) + codes.count(429) == 200, codes
        assert 10 <= codes.count(200) < 40, codes  # ~27 requests' worth of $0.01
        assert all(a.json()["error"]["code"] == "budget_exceeded" for a in answers if a.status_code == 429)
        time.sleep(1)  # the last records and settlements
        logged = {
            r["request_id"]: r for g in gateways for r in settled(g, 0) if r.get("type") == "llm_request"
        }
        records = [logged[a.headers["x-gateway-request-id"]] for a in answers if a.status_code == 200]
        reservation = max(r["budget"]["reserved_usd"] for r in records)
        cost = sum(r["cost_usd"] for r in records)
        assert cost <= 0.01 + reservation, (cost, reservation)
        # What the replicas counted in Redis is what the answers cost (settled by every replica).
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 5
        while True:
            keys = client.keys(prefix + "budget:api_key_id=k-burst:month:*")
            counted = int(client.get(keys[0]) or 0) if keys else 0
            if counted == sum(micro(r["cost_usd"]) for r in records) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(keys) == 1 and counted == sum(micro(r["cost_usd"]) for r in records)
        assert counted <= 10_000 + micro(reservation)
    finally:
        for g in gateways:
            g.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
        server.stop()


def test_a_request_the_rate_limits_refuse_is_charged_nothing_on_a_route_with_a_budget_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both stages' counters go to Redis in one call, all or nothing: a request the budget refuses
    uses none of its rate limit, one the rate limit refuses holds no dollars, and the budget counts
    only the answered requests' cost."""
    clock = tmp_path / "clock"  # the clock starts at midday: the requests share its first minute
    clock.write_text(str(43200 - time.time() % 86400))
    monkeypatch.setenv("GATEWAY_TEST_CLOCK_FILE", str(clock))
    server = start_redis(tmp_path / "redis")
    mock = start_mock()
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    (tmp_path / "ratelimits.yaml").write_text(
        "domain: e2e\ndescriptors:\n  - key: api_key_id\n    rate_limit: {unit: minute, requests_per_unit: 2}\n"
    )
    prefix = f"e2e{id(tmp_path)}:"
    policy = {
        "apiKey": {"keys": KEYS},
        "budgets": {"file": str(budgets)},
        "rateLimits": {"file": str(tmp_path / "ratelimits.yaml"), "domain": "e2e"},
    }
    cfg = listener_config(
        [provider_route("both", "/both", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY, **policy)]
    )
    cfg["config"] |= {
        "cost": {"pricesFile": PRICES},
        "rateLimitStore": {"redis": {"url": server.url, "keyPrefix": prefix}},
    }
    gw = start(tmp_path / "gw", cfg, mock, 1)
    try:
        url = gw.url + "/both/v1/chat/completions"
        # 2000 output tokens may cost $0.02, over the key's $0.01: refused, and not counted by the
        # rate limit (2 a minute), so two requests still pass after it.
        dear = httpx.post(url, json={**HI, "max_tokens": 2000}, headers=auth(BURST), timeout=20)
        assert dear.status_code == 429 and dear.json()["error"]["code"] == "budget_exceeded", dear.text
        # A model the price table does not know: refused by the budget, and not counted either.
        unknown = httpx.post(url, json={**HI, "model": "no-such-model"}, headers=auth(BURST), timeout=20)
        assert unknown.status_code == 403 and unknown.json()["error"]["code"] == "model_not_priced", (
            unknown.text
        )
        answers = [httpx.post(url, json=HI, headers=auth(BURST), timeout=20) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429], [a.text for a in answers]
        refused = answers[2].json()["error"]
        assert refused["code"] == "rate_limit_exceeded", refused
        assert "rateLimits e2e: api_key_id" in refused["message"]
        assert (
            answers[1].headers["x-ratelimit-remaining"] == "0" and "x-budget-remaining" in answers[1].headers
        )
        costs = [micro(record_of(gw, a)["cost_usd"]) for a in answers[:2]]
        assert record_of(gw, answers[2])["budget"] is None  # the budget never answered for it
        # Over its rate limit with a model no price table knows: the rate limit's 429 still comes
        # first (the budget's unpriced refusal waits for the rate limits' answer).
        unpriced = httpx.post(url, json={**HI, "model": "no-such-model"}, headers=auth(BURST), timeout=20)
        assert unpriced.status_code == 429 and unpriced.json()["error"]["code"] == "rate_limit_exceeded"
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 5
        while True:  # the answered requests' costs are settled off their path
            keys = client.keys(prefix + "budget:api_key_id=k-burst:month:*")
            counted = int(client.get(keys[0]) or 0) if keys else 0
            if counted == sum(costs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(keys) == 1 and counted == sum(costs), (counted, costs)
    finally:
        gw.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
        server.stop()
