"""The dashboard's queries and the alert rules against a real Prometheus scraping the real gateway.

Prometheus is Debian's ``prometheus`` package (installed here when missing, as bench/ installs wrk).
After two waves of known traffic (so every rate has two samples apart), every query of
deploy/grafana/dashboards/gateway.json, with Grafana's variables at "All", returns data, and so does
every rule of deploy/prometheus/alerts.yml; every alert fires; ``promtool check`` passes. The quota
alert reads the gateway's own quota gauges: a keyed caller of group team-a uses its monthly quota
from a rateLimits file, then the admin API adds usage past 80% of it. The budget alert reads the
same gauges in dollars: a caller of group marketing spends from its monthly budget, and the admin
API charges it past 80%.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.e2e.conftest import (
    OPENAI_KEY,
    ROOT,
    Gateway,
    failover_route,
    free_port,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

DEPLOY = ROOT / "deploy"
SCRAPE = 1  # seconds: scrape and rule evaluation interval of the test's Prometheus
# Grafana's variables at "All", and its range variables at values the test's traffic fills.
VARIABLES = {"prefix": "agentgateway_", "__rate_interval": "20s", "__range": "5m"}


def ensure_prometheus() -> None:
    """Debian's prometheus (prometheus and promtool); installed once when missing."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True)
        subprocess.run(install, check=True, capture_output=True)


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "gateway.json").read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for panel in dashboard()["panels"]:
        for t in panel.get("targets", []):
            out.append((f"{panel['title']} [{t['refId']}]", t["expr"]))
    return out


def with_variables(expr: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return VARIABLES.get(m.group(1) or m.group(2), ".*")  # query variables at "All"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules_and_the_compose_config() -> None:
    ensure_prometheus()
    rules = [str(DEPLOY / "prometheus" / "alerts.yml")]
    check = subprocess.run(["promtool", "check", "rules", *rules], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr


# The user, group and key labels come from the caller's identity in policies/gateway.yaml; here
# (routes without auth policies) request headers stand in for it, through the same CEL fields.
FIELDS = {
    "user_id": 'request.headers["x-user"]',
    "group_id": 'request.headers["x-group"]',
    "api_key_id": 'request.headers["x-key"]',
}


# The quota alert's caller: a key of group team-a, whose monthly token quota is in a rateLimits file.
QUOTA_KEY = "sk-gw-prometheus-team-a-0123456789"
QUOTA_POLICY = """domain: prom
descriptors:
  - key: group_id
    value: team-a
    metadata: {type: tokens}
    rate_limit: {unit: month, requests_per_unit: 100000}
"""
ADMIN_TOKEN = "adm-prometheus-test-token-0123456789"
# The budget alert's caller: a key of group marketing, with $10 a month.
BUDGET_KEY = "sk-gw-prometheus-marketing-0123456789"
BUDGETS = "budgets:\n  - {group_id: marketing, period: month, usd: 10}\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mock, down = start_mock(), start_mock("--force-status", "503")
    host = f"127.0.0.1:{mock.port}"
    work = tmp_path_factory.mktemp("prom-gw")
    (work / "ratelimits.yaml").write_text(QUOTA_POLICY)
    (work / "budgets.yaml").write_text(BUDGETS)
    keys = [{"key": QUOTA_KEY, "metadata": {"id": "key-q", "user": "quinn", "team": "team-a"}}]
    spender = [{"key": BUDGET_KEY, "metadata": {"id": "key-m", "user": "mia", "team": "marketing"}}]
    routes = [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        failover_route("fo", "/fo", f"127.0.0.1:{down.port}", host),
        provider_route("quota", "/quota", {"openAI": {}}, host, OPENAI_KEY, apiKey={"keys": keys},
                       rateLimits={"file": "ratelimits.yaml", "domain": "prom"}),
        provider_route("budget", "/budget", {"openAI": {}}, host, OPENAI_KEY, apiKey={"keys": spender},
                       budgets={"file": "budgets.yaml"}),
    ]  # fmt: skip
    config = listener_config(routes)
    config["config"]["metrics"] = {"fields": {"add": FIELDS}}
    config["config"]["cost"] = {"pricesFile": str(ROOT / "policies" / "prices.json")}
    config["config"]["adminApi"] = {"port": free_port(), "token": ADMIN_TOKEN}
    with running([mock, down], lambda: launch(work, config, mock)) as gw:
        yield gw


@pytest.fixture(scope="module")
def prometheus(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ensure_prometheus()
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", work / "alerts.yml")
    target = f"127.0.0.1:{gateway.config['config']['metricsPort']}"
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE}s", "evaluation_interval": f"{SCRAPE}s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [
                    {
                        "job_name": "gateway",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (work / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        else:
            raise TimeoutError("prometheus did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def send_wave(gw: Gateway) -> None:
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a few words to count"}]}
    who = {"x-user": "alice", "x-group": "team-a", "x-key": "key-1"}
    for stream in (False, True):
        r = httpx.post(
            f"{gw.url}/openai/v1/chat/completions", json={**chat, "stream": stream}, headers=who, timeout=20
        )
        assert r.status_code == 200, r.text
    unpriced = {**chat, "model": "mock-model-without-a-price"}
    r = httpx.post(f"{gw.url}/openai/v1/chat/completions", json=unpriced, headers=who, timeout=20)
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{gw.url}/fo/v1/chat/completions", json={"messages": chat["messages"]}, headers=who, timeout=20
    )
    assert r.status_code == 200, r.text
    r = httpx.post(f"{gw.url}/openai/v1/chat/completions", json=chat, headers={**who, "x-mock-status": "429"})
    assert r.status_code == 429
    assert httpx.post(f"{gw.url}/nowhere", json=chat).status_code == 404
    quota = {**chat, "max_tokens": 50}
    r = httpx.post(
        f"{gw.url}/quota/v1/chat/completions", json=quota, headers={"authorization": f"Bearer {QUOTA_KEY}"}
    )
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{gw.url}/budget/v1/chat/completions", json=quota, headers={"authorization": f"Bearer {BUDGET_KEY}"}
    )
    assert r.status_code == 200 and r.headers["x-budget-scope"] == "group_id=marketing month", r.text


def push_team_a_past_80_percent(gw: Gateway) -> None:
    """The admin API adds 85% of team-a's month by hand (a back-office import, say)."""
    admin = f"http://127.0.0.1:{gw.config['config']['adminApi']['port']}"
    r = httpx.post(f"{admin}/v1/quotas/adjust", json={"subject": "group_id=team-a", "delta": 85000},
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["quotas"][0]["used"] > 85000  # the traffic's tokens, and what was added


def charge_marketing_past_80_percent(gw: Gateway) -> None:
    """The admin API charges $8.50 of marketing's $10 month by hand (an invoice from elsewhere)."""
    admin = f"http://127.0.0.1:{gw.config['config']['adminApi']['port']}"
    r = httpx.post(f"{admin}/v1/quotas/adjust", json={"subject": "group_id=marketing", "delta_usd": 8.5},
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert 8.5 < r.json()["quotas"][0]["used_usd"] < 8.6  # the traffic's cost, and what was charged


def query(url: str, expr: str) -> list[dict]:
    resp = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]  # type: ignore[no-any-return]


def scraped(url: str, after: float) -> None:
    """Wait until Prometheus has scraped the gateway after ``after`` (a time.time())."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        if targets and all(
            t["health"] == "up" and _seconds(t["lastScrape"]) > after + SCRAPE for t in targets
        ):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no scrape after the traffic: {targets}")


def _seconds(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", rfc3339.replace("Z", "+00:00"))).timestamp()


@pytest.fixture(scope="module")
def after_traffic(gateway: Gateway, prometheus: str) -> str:
    # Two waves: a series first scraped after the first has a second, higher sample after the
    # second, so rate() and increase() are above zero and the quantiles are numbers.
    scraped(prometheus, time.time())
    send_wave(gateway)
    time.sleep(0.5)  # the refused request's line comes by Envoy's gRPC access log (0.2 s flush)
    scraped(prometheus, time.time())
    send_wave(gateway)
    push_team_a_past_80_percent(gateway)
    charge_marketing_past_80_percent(gateway)
    time.sleep(0.5)
    scraped(prometheus, time.time())
    time.sleep(2 * SCRAPE)  # the rules evaluated on the new samples
    return prometheus


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[p for p, _ in dashboard_queries()])
def test_dashboard_query_returns_data(after_traffic: str, panel: str, expr: str) -> None:
    result = query(after_traffic, with_variables(expr))
    assert result, f"{panel}: no data for {with_variables(expr)}"
    values = [float(r["value"][1]) for r in result]
    assert any(math.isfinite(v) for v in values), f"{panel}: {result}"


def test_dashboard_variables_have_values(after_traffic: str) -> None:
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", with_variables(var["definition"]))
        assert m, var["definition"]
        resp = httpx.get(f"{after_traffic}/api/v1/label/{m.group(2)}/values", params={"match[]": m.group(1)})
        assert resp.json()["data"], var["name"]


@pytest.mark.parametrize("rule", alert_rules(), ids=[r["alert"] for r in alert_rules()])
def test_alert_rule_evaluates_to_data_and_fires(after_traffic: str, rule: dict) -> None:
    result = query(after_traffic, rule["expr"])
    assert result, f"{rule['alert']}: no data for {rule['expr']}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{after_traffic}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        firing = [a for a in alerts if a["labels"]["alertname"] == rule["alert"] and a["state"] == "firing"]
        if firing:
            break
        time.sleep(0.5)
    assert firing, f"{rule['alert']} is not firing: {alerts}"
    if rule["alert"] == "GroupTokenQuota80Percent":
        assert {a["labels"]["group_id"] for a in firing} == {"team-a"}
        assert {a["labels"]["quota"] for a in firing} == {"rateLimits/prom/group_id=team-a"}
        assert 0.85 < float(result[0]["value"][1]) < 0.9, result
    if rule["alert"] == "GroupBudget80Percent":
        assert {(a["labels"]["group_id"], a["labels"]["quota"]) for a in firing} == {
            ("marketing", "budget/group_id/month")
        }
        assert 0.85 < float(result[0]["value"][1]) < 0.86, result
