"""The chargeback report: totals equal the ledger's sums, breakdowns add up to them, periods are
[from, to), the three formats; the CLI; the admin API (401 without its token, 400 on bad input)."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from extproc import gateway
from extproc.admin import server as admin
from extproc.config.ledger import AdminApiConfig
from extproc.config.loader import ConfigError, parse_text
from extproc.ledger import report
from extproc.ledger.schema import row_of
from extproc.ledger.store import open_store
from extproc.ports import free_port
from tests.unit.test_ledger import record

UTC = datetime.UTC


@pytest.fixture
def ledger(tmp_path: Path) -> tuple[str, list[dict]]:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    recs = [record(i) for i in range(40)]
    recs.append(record(0, model=None, response_model=None, request_model="claude-x", cost_usd=None,
                       cost_status="unpriced", user_id=None, group_id=None, api_key_id=None))  # fmt: skip
    recs.append(record(0, timestamp="2026-12-01T00:00:00.000+00:00"))  # the next period: excluded
    recs.append(record(0, timestamp="2026-10-31T23:59:59.999+00:00"))  # the last one: excluded
    store = open_store(url)
    store.insert([row_of(r) for r in recs])
    store.close()
    return url, recs[:41]


NOV = (datetime.datetime(2026, 11, 1, tzinfo=UTC), datetime.datetime(2026, 12, 1, tzinfo=UTC))


def sums(recs: list[dict]) -> dict:
    return {
        "requests": len(recs),
        "input_tokens": sum(r["input_tokens"] or 0 for r in recs),
        "output_tokens": sum(r["output_tokens"] or 0 for r in recs),
        "total_tokens": sum(r["total_tokens"] or 0 for r in recs),
        "cost_usd": pytest.approx(sum(r["cost_usd"] or 0 for r in recs), rel=1e-12),
        "unpriced": sum(r["cost_status"] == "unpriced" for r in recs),
    }


def test_totals_are_the_ledgers_sums_and_every_breakdown_adds_up_to_them(ledger: tuple[str, list]) -> None:
    url, recs = ledger
    store = open_store(url)
    rep = report.build(
        store, *NOV, report.parse_by(["group_id", "user_id", "api_key_id", "model", "group_id,user_id"])
    )
    store.close()
    assert rep.totals == sums(recs)
    for b in rep.breakdowns:
        for m in report.MEASURES:
            assert sum(r[m] for r in b.rows) == pytest.approx(rep.totals[m], rel=1e-12), (b.by, m)
    by_group = {r["group_id"]: r for r in rep.breakdowns[0].rows}
    assert by_group["g0"] == {"group_id": "g0", **sums([r for r in recs if r["group_id"] == "g0"])}
    assert by_group[None]["unpriced"] == 1
    models = {r["model"] for r in rep.breakdowns[3].rows}
    assert models == {"gpt-4o", "claude-x"}  # the answering model, else the one asked for
    costs = [r["cost_usd"] for r in rep.breakdowns[1].rows]
    assert costs == sorted(costs, reverse=True)  # the biggest spenders first
    assert rep.breakdowns[4].by == ("group_id", "user_id")


def test_periods_are_half_open_and_default_to_this_month() -> None:
    lo, hi = report.parse_period("2026-11-01", "2026-12-01")
    assert (lo, hi) == NOV
    lo, hi = report.parse_period("2026-11-01", "2026-11-02", "Europe/Berlin")
    assert lo == datetime.datetime(2026, 10, 31, 23, tzinfo=UTC)
    lo, hi = report.parse_period(None, None)
    assert lo.day == 1 and hi.day == 1 and hi > lo
    for bad in [("2026-12-01", "2026-11-01"), ("nope", None)]:
        with pytest.raises(report.ReportError):
            report.parse_period(*bad)
    with pytest.raises(report.ReportError, match="time zone"):
        report.parse_period(None, None, "Mars/Olympus")
    with pytest.raises(report.ReportError, match="--by"):
        report.parse_by(["team"])


def test_formats(ledger: tuple[str, list]) -> None:
    url, recs = ledger
    store = open_store(url)
    rep = report.build(store, *NOV, [("user_id",), ("group_id",)])
    store.close()
    table = report.to_table(rep)
    assert "CHARGEBACK REPORT" in table and "BY USER_ID" in table and "BY GROUP_ID" in table
    assert f"Total Requests: {len(recs)}" in table and "(none)" in table
    assert table.count("TOTAL") == 2
    doc = json.loads(report.to_json(rep))
    assert doc["totals"]["requests"] == len(recs) and [b["by"] for b in doc["breakdowns"]] == [
        ["user_id"],
        ["group_id"],
    ]
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep))))
    assert {r["by"] for r in rows} == {"user_id", "group_id"}
    assert sum(int(r["requests"]) for r in rows if r["by"] == "group_id") == len(recs)
    assert sum(float(r["cost_usd"]) for r in rows if r["by"] == "user_id") == pytest.approx(
        rep.totals["cost_usd"]
    )


def test_the_cli_report(ledger: tuple[str, list]) -> None:
    url, recs = ledger
    run = [
        sys.executable,
        "-m",
        "extproc",
        "usage",
        "report",
        "--ledger",
        url,
        "--from",
        "2026-11-01",
        "--to",
        "2026-12-01",
    ]
    out = subprocess.run(
        [*run, "--by", "group_id", "--format", "json"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["totals"]["requests"] == len(recs)
    out = subprocess.run([*run, "--by", "team"], capture_output=True, text=True)
    assert out.returncode == 2 and "--by 'team'" in out.stderr


def test_the_cli_import_backfills_from_usage_logs_idempotently(tmp_path: Path) -> None:
    log = tmp_path / "extproc.log"
    recs = [record(i) for i in range(5)]
    log.write_text("2026 INFO starting\n" + "".join(json.dumps(r) + "\n" for r in recs) + "not json {\n")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    cmd = [sys.executable, "-m", "extproc", "usage", "import", "--ledger", url, str(log)]
    assert "5 new" in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "0 new" in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_an_admin_port_taken_by_the_gateway_is_a_config_error() -> None:
    cfg = {"config": {"adminApi": {"port": 15020, "token": "t"}}, "binds": [{"port": 3000, "listeners": [
        {"routes": [{"backends": [{"ai": {"name": "o", "provider": {"openAI": {}}}}]}]}]}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"adminApi\.port.*metricsPort"):
        parse_text(json.dumps(cfg))
    cfg["config"]["ledger"] = {"url": "mysql://x"}
    with pytest.raises(ConfigError, match=r"ledger\.url"):
        parse_text(json.dumps(cfg))


# --- the admin API ---------------------------------------------------------------------------------


@pytest.fixture
def admin_api(ledger: tuple[str, list], tmp_path: Path) -> Iterator[str]:
    cfg = {"binds": [{"port": free_port(), "listeners": [
        {"routes": [{"backends": [{"ai": {"name": "o", "provider": {"openAI": {}}}}]}]}]}]}  # fmt: skip
    gw = gateway.build(parse_text(json.dumps(cfg)).config)
    port = free_port()
    ctx = admin.AdminContext(gw, tmp_path, ledger[0])
    loop = asyncio.new_event_loop()
    runner: list[web.AppRunner | None] = []
    ready = threading.Event()

    async def main() -> None:
        runner.append(await admin.start(ctx, AdminApiConfig(port=port, token="s3cret")))
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{port}"
    if runner and runner[0] is not None:
        asyncio.run_coroutine_threadsafe(runner[0].cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)


def test_the_admin_api_refuses_without_its_token(admin_api: str) -> None:
    url = f"{admin_api}/v1/usage/report"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        resp = httpx.get(url, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{admin_api}/nothing-here").status_code == 401  # no route is learned without it


def test_the_admin_api_serves_the_same_report(admin_api: str, ledger: tuple[str, list]) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    q = "from=2026-11-01&to=2026-12-01"
    resp = httpx.get(f"{admin_api}/v1/usage/report?{q}&by=group_id&by=user_id", headers=auth)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc["totals"] == sums(ledger[1])
    assert [b["by"] for b in doc["breakdowns"]] == [["group_id"], ["user_id"]]
    resp = httpx.get(f"{admin_api}/v1/usage/report?{q}&by=group_id,user_id&format=csv", headers=auth)
    assert resp.headers["content-type"].startswith("text/csv") and resp.text.startswith("by,group_id,user_id")
    assert (
        "CHARGEBACK REPORT" in httpx.get(f"{admin_api}/v1/usage/report?{q}&format=table", headers=auth).text
    )
    for bad in ("by=team", "format=xml", "from=yesterday"):
        resp = httpx.get(f"{admin_api}/v1/usage/report?{bad}", headers=auth)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_report_request", bad
