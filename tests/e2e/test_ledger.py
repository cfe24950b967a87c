"""The usage ledger and the chargeback report through the real Envoy, in SQLite and PostgreSQL.

Known traffic (two keyed callers, streaming and not, a provider error, a 403 from the key's model
list and a 401, both refused before the pipeline) lands as one ledger row per request, exactly once,
even when the writer has to retry: the SQLite file is held locked past the busy timeout, and the
PostgreSQL server is stopped and started again mid-traffic (with two extproc workers writing).
The chargeback totals from the CLI and the admin API equal the ledger's sums; the admin API
refuses without its token and is not on the public listener.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from extproc.ledger.schema import TABLE
from extproc.ledger.store import open_store
from extproc.ports import free_port
from extproc.supervisor import Stack
from tests.e2e.conftest import OPENAI_KEY, ROOT, listener_config, provider_route, start_mock
from tests.pg_server import Postgres, remove, start_postgres

ALICE, DIANA = "sk-gw-ledger-alice-0123456789abcdef", "sk-gw-ledger-diana-0123456789abcdef"
ADMIN_TOKEN = "adm-ledger-test-token-0123456789"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "four words for the bill"}]}


def config(host: str, ledger: dict) -> dict:
    keys = [
        {"key": ALICE, "metadata": {"id": "k-alice", "user": "alice", "team": "engineering"}},
        {"key": DIANA, "metadata": {"id": "k-diana", "user": "diana", "team": "marketing"},
         "allowedModels": ["gpt-4o-mini"]},
    ]  # fmt: skip
    route = provider_route("keyed", "/keyed", {"openAI": {}}, host, OPENAI_KEY, apiKey={"keys": keys})
    cfg = listener_config([route], sidecarTimeout="2s")
    cfg["config"] |= {
        "cost": {"pricesFile": str(ROOT / "policies" / "prices.json")},
        "ledger": {**ledger, "flushInterval": "100ms"},
        "adminApi": {"port": free_port(), "token": ADMIN_TOKEN},
    }
    return cfg


class Run:
    def __init__(self, stack: Stack, cfg: dict, url: str) -> None:
        self.stack, self.cfg, self.ledger = stack, cfg, url
        self.base = f"http://127.0.0.1:{cfg['binds'][0]['port']}"
        self.admin = f"http://127.0.0.1:{cfg['config']['adminApi']['port']}"

    def chat(
        self, key: str | None, model: str = "gpt-4o", stream: bool = False, **headers: str
    ) -> httpx.Response:
        if key:
            headers["authorization"] = f"Bearer {key}"
        body = {**CHAT, "model": model, "stream": stream}
        return httpx.post(f"{self.base}/keyed/v1/chat/completions", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def mock() -> Iterator[object]:
    m = start_mock()
    yield m
    m.proc.terminate()
    m.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = start_postgres()
    yield pg
    remove(pg)


def start(tmp: Path, mock: object, ledger: dict, workers: int) -> Run:
    cfg = config(f"127.0.0.1:{mock.port}", ledger)  # type: ignore[attr-defined]
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    stack = Stack(config_path=str(path), workdir=tmp, extproc_port=free_port(), authz_port=free_port(),
                  mock_port=None, quiet=True, extproc_workers=workers)  # fmt: skip
    stack.start(timeout=40)
    url = ledger.get("url") or f"sqlite:///{tmp.resolve() / 'ledger.db'}"  # the default: in the workdir
    return Run(stack, cfg, url)


def rows(url: str) -> list[dict]:
    store = open_store(url)
    try:
        cols = ("request_id", "user_id", "api_key_id", "group_id", "outcome", "http_status_code", "stream",
                "input_tokens", "output_tokens", "total_tokens", "cost_usd")  # fmt: skip
        got = store.query(f"SELECT {', '.join(cols)} FROM {TABLE}", [])
    except Exception:  # no table yet
        return []
    finally:
        store.close()
    return [dict(zip(cols, r, strict=True)) for r in got]


def metric(run: Run, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{run.stack.metrics_port}/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(f"agentgateway_{name} "))


def traffic(run: Run, outage: Callable[[], None], recover: Callable[[], None]) -> tuple[list[str], int]:
    """Ten requests, the second half while the ledger cannot be written; (pipeline ids, refused)."""
    resps = [run.chat(ALICE), run.chat(ALICE, stream=True), run.chat(DIANA, "gpt-4o-mini")]
    time.sleep(1)  # these are written before the outage begins
    outage()
    resps += [
        run.chat(ALICE),
        run.chat(ALICE, stream=True),
        run.chat(DIANA, "gpt-4o-mini", stream=True),
        run.chat(ALICE, **{"x-mock-status": "500"}),  # a provider error
        run.chat(DIANA, "gpt-4o"),  # 403: not one of the key's models (refused by authz)
        run.chat(None),  # 401: no key
        run.chat(ALICE),
    ]
    assert [r.status_code for r in resps] == [200, 200, 200, 200, 200, 200, 500, 403, 401, 200]
    for r in resps:
        r.read()
    recover()
    return [r.headers["x-gateway-request-id"] for r in resps if "x-gateway-request-id" in r.headers], 2


def log_records(run: Run) -> list[dict]:
    """Every worker's usage log lines (their stdout, in the workdir's extproc*.log)."""
    found = []
    for path in run.stack.workdir.glob("extproc*.log"):
        found += [
            json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith('{"type":"llm_request"')
        ]
    return found


def settled(url: str, n: int, timeout: float = 40) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(rows(url)) < n and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1.5)  # a retried batch written twice would show up now
    return rows(url)


def check_ledger(run: Run, ids: list[str], refused: int) -> list[dict]:
    got = settled(run.ledger, len(ids) + refused)
    assert len(got) == len(ids) + refused == 10
    by_id = {r["request_id"]: r for r in got}
    assert set(ids) <= set(by_id)
    alice = [r for r in got if r["api_key_id"] == "k-alice"]
    assert len(alice) == 6 and {(r["user_id"], r["group_id"]) for r in alice} == {("alice", "engineering")}
    assert sum(bool(r["stream"]) for r in got) == 3
    ok = [r for r in got if r["outcome"] == "ok"]
    assert len(ok) == 7 and all(r["input_tokens"] > 0 and r["cost_usd"] > 0 for r in ok)
    assert [r["http_status_code"] for r in got if r["outcome"] == "provider_error"] == [500]
    rejected = {r["http_status_code"]: r for r in got if r["outcome"] == "rejected"}
    assert set(rejected) == {401, 403}
    # The ledger says what the usage log line says: the row is built from the same record (the
    # identity of a refusal is whatever authz recorded before refusing).
    line = next(rec for rec in log_records(run) if rec["request_id"] == rejected[403]["request_id"])
    assert line["http_status_code"] == 403 and line["outcome"] == "rejected"
    assert {k: line[k] for k in ("user_id", "api_key_id", "group_id")} == {
        k: rejected[403][k] for k in ("user_id", "api_key_id", "group_id")
    }
    assert rejected[401]["api_key_id"] is None
    assert metric(run, "ledger_write_failures_total") >= 1  # the writer did retry
    return got


def check_reports(run: Run, got: list[dict]) -> None:
    def sums(rs: list[dict]) -> dict:
        return {
            "requests": len(rs),
            "input_tokens": sum(r["input_tokens"] or 0 for r in rs),
            "output_tokens": sum(r["output_tokens"] or 0 for r in rs),
            "total_tokens": sum(r["total_tokens"] or 0 for r in rs),
            "cost_usd": pytest.approx(sum(r["cost_usd"] or 0 for r in rs), rel=1e-9),
            "unpriced": 0,
        }

    period = ["--from", "2000-01-01", "--to", "2100-01-01"]
    cli = subprocess.run(
        [sys.executable, "-m", "extproc", "usage", "report", "--ledger", run.ledger, *period,
         "--by", "group_id", "--by", "user_id", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    doc = json.loads(cli.stdout)
    assert doc["totals"] == sums(got)
    groups = {r["group_id"]: r for r in doc["breakdowns"][0]["rows"]}
    for group in ("engineering", "marketing", None):
        mine = [r for r in got if r["group_id"] == group]
        assert {k: v for k, v in groups[group].items() if k != "group_id"} == sums(mine)
    q = "from=2000-01-01&to=2100-01-01&by=group_id&by=user_id"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api = httpx.get(f"{run.admin}/v1/usage/report?{q}", headers=auth, timeout=30)
    assert api.status_code == 200
    assert api.json()["totals"] == doc["totals"] and api.json()["breakdowns"] == doc["breakdowns"]
    table = httpx.get(f"{run.admin}/v1/usage/report?{q}&format=table", headers=auth).text
    assert "CHARGEBACK REPORT" in table and "engineering" in table
    # Without the token: 401. On the public listener: no such route (Envoy's 404), never the report.
    assert httpx.get(f"{run.admin}/v1/usage/report?{q}").status_code == 401
    public = httpx.get(f"{run.base}/v1/usage/report?{q}", headers=auth)
    assert public.status_code == 404 and "totals" not in public.text
    assert listening_on(run.cfg["config"]["adminApi"]["port"]) == {"127.0.0.1"}


def listening_on(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_sqlite_ledger_exactly_once_through_a_locked_file(tmp_path: Path, mock: object) -> None:
    run = start(tmp_path, mock, {}, workers=1)
    holder = sqlite3.connect(run.ledger.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
    try:
        # Held past the writer's 5 s busy timeout: its batch fails and is retried.
        ids, refused = traffic(run, lambda: holder.execute("BEGIN EXCLUSIVE"), lambda: time.sleep(6.5))
        holder.execute("COMMIT")
        got = check_ledger(run, ids, refused)
        check_reports(run, got)
    finally:
        holder.close()
        run.stack.stop()


def test_postgres_ledger_exactly_once_across_a_restart(
    tmp_path: Path, mock: object, postgres: Postgres
) -> None:
    store = open_store(postgres.url)
    store.query(f"DELETE FROM {TABLE} RETURNING 1", [])
    store.close()
    run = start(tmp_path, mock, {"url": postgres.url}, workers=2)
    try:
        ids, refused = traffic(run, postgres.stop, postgres.start)
        got = check_ledger(run, ids, refused)
        check_reports(run, got)
    finally:
        run.stack.stop()
