"""``config.ledger`` (the usage ledger) and ``config.adminApi`` (the admin HTTP API).

The ledger is on by default: SQLite, ``ledger.db`` in the extproc sidecar's data directory
(``--data-dir``; the config file's directory unless told; the supervisor passes its workdir).
``url`` names another: ``sqlite:///relative/to/the/config.db``, ``sqlite:////absolute.db``, or
``postgresql://user:pass@host:5432/db`` (``$VAR``/``${VAR}`` read from the environment as it loads).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from extproc.config.base import Duration, Loc, Strict, parse_duration

LEDGER_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class LedgerConfig(Strict):
    enabled: bool = True
    url: str | None = None
    # Rows per write; a batch is written when full or flushInterval after its first row.
    batch_size: int = Field(500, alias="batchSize", ge=1, le=10000)
    flush_interval: Duration = Field("1s", alias="flushInterval")
    # Rows held in memory while the database cannot be written (it is down, or locked): past this,
    # new rows are dropped, counted in ledger_rows_dropped_total and logged (the stdout usage
    # log still has them: `gateway usage import` backfills the ledger from it).
    max_pending_rows: int = Field(100_000, alias="maxPendingRows", ge=100)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or v.startswith("$"):
            return v
        if not v.startswith(LEDGER_SCHEMES):
            raise ValueError(f"{v!r}: use sqlite:///path.db or postgresql://user@host/db")
        return v


class AdminApiConfig(Strict):
    """The admin API (extproc/admin/): its own port, never one of Envoy's listeners."""

    port: int = Field(ge=1, le=65535)
    # 127.0.0.1 unless told: only this machine reaches it. Under compose, 0.0.0.0 inside the
    # container with the port left unpublished (or published on 127.0.0.1 only).
    host: str = "127.0.0.1"
    # A literal or $ENV_VAR. Unset or empty: the admin API is not served (and that is logged).
    token: str | None = Field(None, repr=False)


def problems(
    ledger: LedgerConfig, admin: AdminApiConfig | None, taken: dict[int, str]
) -> list[tuple[Loc, str]]:
    """Checks that span fields: the flush interval parses, the admin port is nobody else's."""
    found: list[tuple[Loc, str]] = []
    try:
        parse_duration(ledger.flush_interval)
    except ValueError as exc:
        found.append((("config", "ledger", "flushInterval"), str(exc)))
    if admin is not None and admin.port in taken:
        found.append(
            (("config", "adminApi", "port"), f"port {admin.port} is already the {taken[admin.port]}")
        )
    return found
