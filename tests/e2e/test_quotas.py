"""Managing quotas through the real Envoy: the admin API and `gateway quotas` set, adjust and reset a
subject's quota, and the next request through Envoy sees it (429, passes, the x-ratelimit headers);
an override outlives the policy file reloading; two gateways sharing one real Redis both see a
change made through either one's admin API."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import OPENAI_KEY, Gateway, free_port, listener_config, provider_route, start_mock
from tests.e2e.test_rate_limits import start
from tests.redis_server import start_redis

TOKEN = "adm-quotas-test-token-0123456789"
KEYS = {
    "alice": ("sk-gw-quotas-alice-0123456789", "key-alice", "marketing"),
    "bob": ("sk-gw-quotas-bob-0123456789ab", "key-bob", "marketing"),
    "carol": ("sk-gw-quotas-carol-0123456789", "key-carol", "sales"),
}
POLICY = """domain: q
descriptors:
  - key: user_id
    rate_limit: {{unit: hour, requests_per_unit: {users}}}
  - key: group_id
    value: marketing
    metadata: {{type: tokens}}
    rate_limit: {{unit: month, requests_per_unit: 1000000}}
"""
CHAT = {"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def config(mock_port: int, policy: Path, store: dict | None = None) -> dict:
    keys = [{"key": k, "metadata": {"id": i, "user": u, "team": t}} for u, (k, i, t) in KEYS.items()]
    route = provider_route(
        "q", "/q", {"openAI": {}}, f"127.0.0.1:{mock_port}", OPENAI_KEY,
        apiKey={"keys": keys}, rateLimits={"file": str(policy), "domain": "q"},
    )  # fmt: skip
    cfg = listener_config([route])
    cfg["config"]["adminApi"] = {"port": free_port(), "token": TOKEN}
    if store is not None:
        cfg["config"]["rateLimitStore"] = store
    return cfg


class Admin:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.url = f"http://127.0.0.1:{gw.config['config']['adminApi']['port']}"

    def post(self, op: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        resp = httpx.post(
            f"{self.url}/v1/quotas/{op}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status_code == status, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def get(self, subject: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/v1/quotas", params={"subject": subject},
                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def cli(self, *argv: str, admin_url: bool = False) -> subprocess.CompletedProcess[str]:
        """`gateway quotas ...`, finding the admin API and its token from the gateway's config."""
        where = (
            ["--admin-url", self.url, "--token", TOKEN]
            if admin_url
            else ["--config", str(self.gw.config_path)]
        )
        return subprocess.run([sys.executable, "-m", "extproc", "quotas", *argv, *where],
                              capture_output=True, text=True, timeout=30)  # fmt: skip


def chat(gw: Gateway, who: str) -> httpx.Response:
    key = KEYS[who][0]
    return httpx.post(f"{gw.url}/q/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"},
                      timeout=20)  # fmt: skip


@pytest.fixture
def one(tmp_path: Path) -> Iterator[tuple[Gateway, Admin, Path]]:
    mock = start_mock()
    policy = tmp_path / "ratelimits.yaml"
    policy.write_text(POLICY.format(users=100))
    try:
        gw = start(tmp_path / "gw", config(mock.port, policy), mock)
        try:
            yield gw, Admin(gw), policy
        finally:
            gw.stack.stop()
    finally:
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def until(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


def test_set_reset_and_adjust_through_the_admin_api_take_effect_on_the_next_request(
    one: tuple[Gateway, Admin, Path],
) -> None:
    gw, admin, policy = one
    first = chat(gw, "alice")
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit"] == "100, 100;w=3600, 1000000;w=2592000"
    # A lower quota for alice: she has used 1 of 1, so her next request is refused; bob is not.
    got = admin.post("set", {"subject": "user_id=alice", "limit": 1})
    assert got["quotas"][0] | {"resets_in_seconds": 0} == {
        "quota": "rateLimits/q/user_id", "subject": "user_id=alice", "unit": "requests", "period": "hour",
        "limit": 1, "configured": 100, "override": 1, "used": 1, "remaining": 0, "resets_in_seconds": 0,
        "period_end": got["quotas"][0]["period_end"], "shadow": False,
    }  # fmt: skip
    refused = chat(gw, "alice")
    assert refused.status_code == 429, refused.text
    assert refused.headers["x-ratelimit-limit"].startswith("1, 1;w=3600")
    assert refused.headers["x-ratelimit-remaining"] == "0" and "retry-after" in refused.headers
    assert "rateLimits q: user_id" in refused.json()["error"]["message"]
    assert chat(gw, "bob").status_code == 200
    # The file is edited and reloaded: alice's override stays in force, bob gets the new limit.
    policy.write_text(POLICY.format(users=200))
    assert until(lambda: chat(gw, "bob").headers["x-ratelimit-limit"].startswith("200, 200;w=3600"))
    assert chat(gw, "alice").status_code == 429
    assert admin.get("user_id=alice")["quotas"][0]["configured"] == 200
    # Reset: her hour starts again (the override stays: one more, then refused).
    admin.post("reset", {"subject": "user_id=alice"})
    assert chat(gw, "alice").status_code == 200
    assert chat(gw, "alice").status_code == 429
    # Adjust: one request given back lets one more through.
    assert admin.post("adjust", {"subject": "user_id=alice", "delta": -1})["quotas"][0]["used"] == 0
    assert chat(gw, "alice").status_code == 200
    admin.post("set", {"subject": "user_id=alice", "limit": None})
    ok = chat(gw, "alice")
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit"].startswith("200, ")
    # Adjust a token quota: marketing's month used up by hand refuses both its users.
    admin.post("adjust", {"subject": "group_id=marketing", "delta": 1_000_000})
    for who in ("alice", "bob"):
        over = chat(gw, who)
        assert over.status_code == 429 and "group_id=marketing (tokens)" in over.json()["error"]["message"]
    assert chat(gw, "carol").status_code == 200  # sales has no such quota
    admin.post("adjust", {"subject": "group_id=marketing", "delta": -1_000_000})
    assert chat(gw, "bob").status_code == 200
    # Bad input through the real listener: a 400 naming the field.
    bad = admin.post("set", {"subject": "user_id=alice", "limit": "ten"}, status=400)
    assert bad["error"]["param"] == "limit"
    # The quota gauges, on the gateway's /metrics.
    metrics = httpx.get(f"http://127.0.0.1:{gw.config['config']['metricsPort']}/metrics").text
    line = next(ln for ln in metrics.splitlines() if ln.startswith("agentgateway_quota_limit{")
                and 'user_id="alice"' in ln)  # fmt: skip
    assert line.endswith(" 200.0"), line


def test_the_cli_sets_shows_adjusts_and_resets(one: tuple[Gateway, Admin, Path]) -> None:
    gw, admin, _ = one
    assert chat(gw, "bob").status_code == 200
    done = admin.cli("set", "user_id=bob", "0")
    assert done.returncode == 0, done.stderr
    assert "override; configured 100" in done.stdout
    assert chat(gw, "bob").status_code == 429
    shown = admin.cli("show", "user_id=bob", "--format", "json", admin_url=True)
    assert shown.returncode == 0, shown.stderr
    assert '"limit": 0' in shown.stdout and '"used": 1' in shown.stdout
    assert admin.cli("reset", "user_id=bob").returncode == 0
    assert chat(gw, "bob").status_code == 429  # reset, but the limit is 0
    assert admin.cli("set", "user_id=bob", "clear").returncode == 0
    assert chat(gw, "bob").status_code == 200
    before = admin.get("group_id=marketing")["quotas"][0]["used"]
    added = admin.cli("adjust", "group_id=marketing", "5000")
    assert added.returncode == 0, added.stderr
    assert admin.get("group_id=marketing")["quotas"][0]["used"] == before + 5000
    table = admin.cli("show", "group_id=marketing").stdout
    assert table.startswith("subject: group_id=marketing\n") and "rateLimits/q/group_id=marketing" in table
    wrong = admin.cli("set", "team=marketing", "5")
    assert wrong.returncode == 2 and "400: subject: unknown key 'team'" in wrong.stderr
    unauthorized = subprocess.run(
        [sys.executable, "-m", "extproc", "quotas", "show", "user_id=bob", "--admin-url", admin.url,
         "--token", "wrong"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert unauthorized.returncode == 1 and "401" in unauthorized.stderr


@pytest.mark.parametrize("link", ["tcp", "unix"])
def test_two_gateways_sharing_redis_both_see_a_change_made_through_either(tmp_path: Path, link: str) -> None:
    """Over loopback TCP, and over Redis's Unix socket (``unix://``, Redis beside the gateways)."""
    redis = start_redis(tmp_path / "redis")
    mock = start_mock()
    gateways: list[Gateway] = []
    try:
        policy = tmp_path / "ratelimits.yaml"
        policy.write_text(POLICY.format(users=100))
        url = redis.unix_url if link == "unix" else redis.url
        store = {"redis": {"url": url, "keyPrefix": f"q{id(tmp_path)}:"}}
        for n in range(2):
            gateways.append(
                start(tmp_path / f"gw{n}", config(mock.port, policy, store), mock, envoy_concurrency=1)
            )
        a, b = gateways
        admin_a, admin_b = Admin(a), Admin(b)
        admin_a.post("set", {"subject": "user_id=carol", "limit": 2})
        assert [chat(g, "carol").status_code for g in (a, b, a, b)] == [200, 200, 429, 429]
        refused = chat(b, "carol")
        assert refused.headers["x-ratelimit-limit"].startswith("2, 2;w=3600")
        assert admin_b.get("user_id=carol")["quotas"][0]["used"] == 2  # b reads what a set and counted
        assert admin_b.cli("reset", "user_id=carol", admin_url=True).returncode == 0
        assert chat(a, "carol").status_code == 200
        admin_a.post("adjust", {"subject": "user_id=carol", "delta": 1})
        assert chat(b, "carol").status_code == 429
        admin_b.post("set", {"subject": "user_id=carol", "limit": None})
        assert [chat(g, "carol").status_code for g in (a, b)] == [200, 200]
    finally:
        for g in gateways:
            g.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
        redis.stop()
