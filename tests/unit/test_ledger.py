"""The usage ledger: rows from usage records, idempotent writes, the background writer's retries,
bounds and shutdown flush, several processes on one SQLite file, and PostgreSQL (a real server)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from extproc.config.ledger import LedgerConfig
from extproc.ledger import runtime
from extproc.ledger.schema import NAMES, TABLE, row_of
from extproc.ledger.store import SQLiteStore, Store, open_store
from extproc.ledger.writer import LedgerMetrics, LedgerWriter
from tests.e2e.test_observability import RECORD_FIELDS
from tests.pg_server import Postgres, remove, start_postgres


def record(n: int = 0, **over: Any) -> dict[str, Any]:
    base = {name: None for name in RECORD_FIELDS}
    base.update(
        type="llm_request", request_id=uuid.uuid4().hex, timestamp=f"2026-11-{1 + n % 28:02d}T10:00:00.000+00:00",
        route="openai", api="completions", http_status_code=200, outcome="ok", provider="openai",
        response_model="gpt-4o", stream=False, attempt_count=1, input_tokens=10 + n, output_tokens=5,
        total_tokens=15 + n, cost_usd=0.001 * (n + 1), cost_status="priced", user_id=f"u{n % 3}",
        api_key_id=f"k{n % 4}", group_id=f"g{n % 2}", path="/v1/secret?key=sk-xyz",
    )  # fmt: skip
    base.update(over)
    return base


def count(url: str) -> int:
    store = open_store(url)
    try:
        return store.query(f"SELECT COUNT(*) FROM {TABLE}", [])[0][0]
    finally:
        store.close()


def metrics() -> LedgerMetrics:
    return LedgerMetrics.build(CollectorRegistry(), "t")


def value(counter: Any) -> float:
    return counter._value.get()


def rows_within(url: str, wanted: int, seconds: float) -> int:
    """The ledger's row count once it reaches ``wanted``, or when ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while count(url) < wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return count(url)


def test_the_row_is_the_records_own_fields_without_free_text() -> None:
    assert set(NAMES) <= RECORD_FIELDS
    assert not {"path", "error", "client_request_id"} & set(NAMES)
    rec = record(1)
    assert row_of(rec) == tuple(rec[n] for n in NAMES)


def test_a_row_written_twice_is_one_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    rows = [row_of(record(i)) for i in range(5)]
    store = open_store(url)
    assert store.insert(rows) == 5
    assert store.insert([*rows[2:], row_of(record(9))]) == 1
    store.close()
    assert count(url) == 6


def test_the_writer_writes_every_row_once_and_flushes_on_stop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    m = metrics()
    w = LedgerWriter(lambda: open_store(url), batch_size=7, flush_interval=0.05, metrics=m).start()
    for i in range(100):
        w.submit(record(i))
    assert w.stop(timeout=5) == 0
    assert count(url) == 100
    assert value(m.written) == 100


def test_a_full_batch_is_written_without_waiting_for_the_flush_interval(tmp_path: Path) -> None:
    """The writer thread is woken by a batch's first row and by a full batch, not per row: a full
    batch must not linger for flushInterval, and a lone row must not wait for more."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    w = LedgerWriter(lambda: open_store(url), batch_size=10, flush_interval=30, metrics=metrics()).start()
    try:
        for i in range(10):
            w.submit(record(i))
        assert rows_within(url, 10, seconds=5) == 10
    finally:
        w.stop(timeout=5)
    lone = LedgerWriter(lambda: open_store(url), batch_size=10, flush_interval=0.05, metrics=metrics()).start()
    try:
        lone.submit(record(99))
        assert rows_within(url, 11, seconds=5) == 11
    finally:
        lone.stop(timeout=5)


class CommitThenFail:
    """A store whose first write commits and then fails, as when the connection drops after COMMIT."""

    def __init__(self, inner: Store, failures: list[int]) -> None:
        self.inner, self.failures, self.placeholder = inner, failures, inner.placeholder

    def insert(self, rows: list) -> int:
        n = self.inner.insert(rows)
        if self.failures[0]:
            self.failures[0] -= 1
            raise sqlite3.OperationalError("connection lost after commit")
        return n

    def close(self) -> None:
        self.inner.close()


def test_a_batch_retried_after_a_hidden_commit_is_not_counted_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    failures = [1]
    m = metrics()
    w = LedgerWriter(
        lambda: CommitThenFail(open_store(url), failures), batch_size=1000, flush_interval=0.2, metrics=m
    ).start()
    ids = []
    for i in range(50):
        rec = record(i)
        ids.append(rec["request_id"])
        w.submit(rec)
    w.stop(timeout=5)
    assert value(m.failures) == 1
    store = open_store(url)
    got = [r[0] for r in store.query(f"SELECT request_id FROM {TABLE}", [])]
    store.close()
    assert sorted(got) == sorted(ids)


def test_a_database_that_is_down_is_retried_until_it_is_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    down = threading.Event()
    down.set()

    def connect() -> Store:
        if down.is_set():
            raise sqlite3.OperationalError("unable to open database file")
        return open_store(url)

    m = metrics()
    w = LedgerWriter(connect, batch_size=10, flush_interval=0.01, metrics=m).start()
    for i in range(30):
        w.submit(record(i))
    time.sleep(0.5)
    assert value(m.failures) >= 2  # retried, with backoff
    down.clear()
    deadline = time.monotonic() + 10
    while value(m.written) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop()
    assert count(url) == 30


def test_past_max_pending_new_rows_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def connect() -> Store:
        raise sqlite3.OperationalError("down")

    m = metrics()
    w = LedgerWriter(connect, batch_size=10, flush_interval=0.01, max_pending=100, metrics=m).start()
    for i in range(300):
        w.submit(record(i))
    # At most max_pending queued plus the one batch in hand: the rest were dropped, and said so.
    assert 300 - 100 - 10 <= value(m.dropped) <= 200
    assert "dropped" in caplog.text
    assert w.stop(timeout=0.3) <= 100


def test_a_locked_sqlite_file_is_waited_for_then_written(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process's long transaction
    m = metrics()
    w = LedgerWriter(lambda: open_store(f"sqlite:///{path}"), batch_size=5, flush_interval=0.01, metrics=m)
    w.start()
    for i in range(20):
        w.submit(record(i))
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    deadline = time.monotonic() + 10
    while value(m.written) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop()
    assert count(f"sqlite:///{path}") == 20


def _write_some(url: str, ids: list[str]) -> None:
    w = LedgerWriter(lambda: open_store(url), batch_size=20, flush_interval=0.01).start()
    for rid in ids:
        w.submit(record(0, request_id=rid))
    w.stop(timeout=20)


def test_several_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ids = [uuid.uuid4().hex for _ in range(600)]
    # Three workers with overlapping ids (each writes 300, every id by at least one): WAL, busy timeout.
    parts = [ids[0:300], ids[150:450], ids[300:600]]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_some, args=(url, p)) for p in parts]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert count(url) == 600


def test_ledger_urls_resolve_relative_to_the_config_and_default_to_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_dir, data = tmp_path / "cfg", tmp_path / "run"
    assert runtime.url_of(LedgerConfig(), cfg_dir, data) == f"sqlite:///{data.resolve() / 'ledger.db'}"
    assert runtime.url_of(LedgerConfig(), cfg_dir) == f"sqlite:///{cfg_dir.resolve() / 'ledger.db'}"
    assert runtime.url_of(LedgerConfig(url="sqlite:///db/u.db"), cfg_dir, data) == (
        f"sqlite:///{(cfg_dir / 'db' / 'u.db').resolve()}"
    )
    assert runtime.url_of(LedgerConfig(url="sqlite:////abs/u.db"), cfg_dir) == "sqlite:////abs/u.db"
    assert runtime.url_of(LedgerConfig(enabled=False), cfg_dir) is None
    monkeypatch.setenv("LEDGER_URL", "postgresql://u:pw@db/ledger")
    assert runtime.url_of(LedgerConfig(url="$LEDGER_URL"), cfg_dir) == "postgresql://u:pw@db/ledger"
    assert runtime.shown("postgresql://u:pw@db/ledger") == "postgresql://u:***@db/ledger"
    monkeypatch.delenv("LEDGER_URL")
    with pytest.raises(runtime.LedgerConfigError, match="LEDGER_URL"):
        runtime.url_of(LedgerConfig(url="$LEDGER_URL"), cfg_dir)


def test_submit_before_start_does_nothing() -> None:
    runtime.stop()
    runtime.submit(record())  # no writer: unit tests and embedded use never touch a database


# --- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = start_postgres()
    yield pg
    remove(pg)


def test_postgres_rows_are_idempotent_and_typed(postgres: Postgres) -> None:
    store = open_store(postgres.url)
    rows = [row_of(record(i, stream=i % 2 == 0)) for i in range(10)]
    assert store.insert(rows) == 10
    assert store.insert(rows) == 0
    got = store.query(
        f'SELECT stream, cost_usd, "timestamp" FROM {TABLE} WHERE request_id = %s', [rows[0][0]]
    )
    store.close()
    assert got[0][0] is True and got[0][1] == pytest.approx(0.001)
    assert got[0][2].isoformat() == "2026-11-01T10:00:00+00:00"


def test_postgres_restarted_under_the_writer_loses_nothing(postgres: Postgres) -> None:
    m = metrics()
    w = LedgerWriter(lambda: open_store(postgres.url), batch_size=10, flush_interval=0.01, metrics=m).start()
    first = [record(i) for i in range(20)]
    for rec in first:
        w.submit(rec)
    deadline = time.monotonic() + 10
    while value(m.written) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    postgres.stop()
    later = [record(i) for i in range(20)]
    for rec in later:
        w.submit(rec)
    time.sleep(0.5)
    assert value(m.failures) >= 1
    postgres.start()
    deadline = time.monotonic() + 15
    while value(m.written) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop()
    store = open_store(postgres.url)
    ids = {r["request_id"] for r in first + later}
    got = store.query(f"SELECT request_id FROM {TABLE} WHERE request_id = ANY(%s)", [list(ids)])
    store.close()
    assert {r[0] for r in got} == ids
