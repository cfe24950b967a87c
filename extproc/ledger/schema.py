"""The ledger's table: one row per request, its columns the usage record's own fields.

A row is built from the same record dict the usage log line is written from
(extproc/pipeline/stages/usage_record.py, extproc/telemetry/rejected.py), so the ledger and the
log cannot disagree on a field. Free text (path, error, client_request_id) is left out: it is in
the log line, redacted, and a bill does not need it.
"""

from __future__ import annotations

from typing import Any

TABLE = "gateway_usage"

# (record field, SQLite type, PostgreSQL type)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("request_id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY"),
    ("timestamp", "TEXT NOT NULL", "TIMESTAMPTZ NOT NULL"),  # arrival, UTC: the period a request is in
    ("route", "TEXT", "TEXT"),
    ("api", "TEXT", "TEXT"),
    ("provider", "TEXT", "TEXT"),
    ("provider_kind", "TEXT", "TEXT"),
    ("request_model", "TEXT", "TEXT"),
    ("response_model", "TEXT", "TEXT"),
    ("stream", "INTEGER", "BOOLEAN"),
    ("http_status_code", "INTEGER", "INTEGER"),
    ("outcome", "TEXT", "TEXT"),
    ("attempt_count", "INTEGER", "INTEGER"),
    ("input_tokens", "INTEGER", "BIGINT"),
    ("output_tokens", "INTEGER", "BIGINT"),
    ("total_tokens", "INTEGER", "BIGINT"),
    ("cache_read_tokens", "INTEGER", "BIGINT"),
    ("cache_write_tokens", "INTEGER", "BIGINT"),
    ("reasoning_tokens", "INTEGER", "BIGINT"),
    ("cost_usd", "REAL", "DOUBLE PRECISION"),
    ("cost_status", "TEXT", "TEXT"),
    ("duration_ms", "REAL", "DOUBLE PRECISION"),
    ("user_id", "TEXT", "TEXT"),
    ("api_key_id", "TEXT", "TEXT"),
    ("group_id", "TEXT", "TEXT"),
)
NAMES: tuple[str, ...] = tuple(c[0] for c in COLUMNS)
Row = tuple[Any, ...]


def row_of(record: dict[str, Any]) -> Row:
    """The ledger row of one usage record (a missing field is NULL)."""
    return tuple(map(record.get, NAMES))  # map: no generator frame per field (a row per request)


def create_table(dialect: str) -> list[str]:
    """The statements that make the table and its index, if missing (``sqlite`` or ``postgresql``)."""
    kind = 1 if dialect == "sqlite" else 2
    cols = ", ".join(f'"{c[0]}" {c[kind]}' for c in COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})",
        f'CREATE INDEX IF NOT EXISTS {TABLE}_timestamp ON {TABLE} ("timestamp")',
    ]


def insert_sql(placeholder: str) -> str:
    """Idempotent by request id: a row written twice (a retried batch) is one row."""
    cols = ", ".join(f'"{n}"' for n in NAMES)
    marks = ", ".join(placeholder for _ in NAMES)
    return f'INSERT INTO {TABLE} ({cols}) VALUES ({marks}) ON CONFLICT ("request_id") DO NOTHING'
