"""Where ledger rows go: a SQLite file (the default) or PostgreSQL.

Both are written the same way: one transaction per batch, ``INSERT ... ON CONFLICT (request_id)
DO NOTHING``, so a batch written again after an error that hid a commit (a connection dropped after
COMMIT) adds nothing. Several extproc workers may write one database at once: SQLite in WAL mode
with a busy timeout serializes their transactions, PostgreSQL needs nothing.
"""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from extproc.ledger.schema import Row, create_table, insert_sql

# How long a SQLite writer waits for another process's transaction before the batch fails (and is
# retried): long enough for any batch, short enough that a stuck database shows in the metrics.
BUSY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5


class Store(Protocol):
    placeholder: str

    def insert(self, rows: list[Row]) -> int:
        """Write rows in one transaction; the number that were new."""
        ...

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]: ...

    def bound(self, when: datetime.datetime) -> Any:
        """A period bound as the ``timestamp`` column compares."""
        ...

    def close(self) -> None: ...


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` (relative) or ``sqlite:////abs.db``: the path after the third slash."""
    return Path(url.removeprefix("sqlite:///"))


def dialect_of(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise ValueError(f"{url!r}: a ledger URL is sqlite:///path.db or postgresql://user@host/db")


def open_store(url: str) -> Store:
    """Connect and make the table if it is missing (raises the driver's error if it cannot)."""
    if dialect_of(url) == "sqlite":
        return SQLiteStore(sqlite_path(url))
    return PostgresStore(url)


class SQLiteStore:
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self.conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writers
            self.conn.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; no fsync per batch
            for stmt in create_table("sqlite"):
                self.conn.execute(stmt)
        except BaseException:
            self.conn.close()
            raise

    def insert(self, rows: list[Row]) -> int:
        before = self.conn.total_changes
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(insert_sql("?"), rows)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return self.conn.total_changes - before

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def bound(self, when: datetime.datetime) -> str:
        # The records' own format: ISO 8601 in UTC with milliseconds, which sorts as text.
        return when.astimezone(datetime.UTC).isoformat(timespec="milliseconds")

    def close(self) -> None:
        self.conn.close()


class PostgresStore:
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        import psycopg  # only PostgreSQL ledgers need the driver loaded

        self.conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
        try:
            with self.conn.transaction():
                for stmt in create_table("postgresql"):
                    self.conn.execute(stmt)
        except BaseException:
            self.conn.close()
            raise

    def insert(self, rows: list[Row]) -> int:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(insert_sql("%s"), rows)
            return max(cur.rowcount, 0)

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def bound(self, when: datetime.datetime) -> datetime.datetime:
        return when.astimezone(datetime.UTC)

    def close(self) -> None:
        self.conn.close()
