"""The extproc process's ledger writer: where the ledger is, started once, fed by the stages.

``submit`` is what the usage-record stage and the rejected-request log call with each record; it
does nothing until ``start`` ran (unit tests, embedded use, or ``config.ledger.enabled: false``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from extproc.config.base import parse_duration
from extproc.config.ledger import LedgerConfig
from extproc.gateway import resolve_secret
from extproc.ledger.store import dialect_of, open_store, sqlite_path
from extproc.ledger.writer import LedgerMetrics, LedgerWriter

log = logging.getLogger("gateway.ledger")

DEFAULT_FILE = "ledger.db"


class LedgerConfigError(Exception):
    """config.ledger.url names a variable that is unset."""


def url_of(cfg: LedgerConfig, config_dir: Path, data_dir: Path | None = None) -> str | None:
    """The ledger's URL: ``config.ledger.url`` (a relative SQLite path is relative to the config
    file), else ``ledger.db`` in ``data_dir`` (default: the config's directory); None when off."""
    if not cfg.enabled:
        return None
    if cfg.url is None:
        return f"sqlite:///{((data_dir or config_dir) / DEFAULT_FILE).resolve()}"
    url, missing = resolve_secret(cfg.url)
    if url is None:
        raise LedgerConfigError(f"config.ledger.url: environment variable {missing} is not set")
    if dialect_of(url) == "sqlite" and not sqlite_path(url).is_absolute():
        return f"sqlite:///{(config_dir / sqlite_path(url)).resolve()}"
    return url


def shown(url: str) -> str:
    """The URL for a log line: without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


_writer: LedgerWriter | None = None


def start(url: str, cfg: LedgerConfig, registry: CollectorRegistry | None, prefix: str) -> LedgerWriter:
    global _writer
    stop()
    _writer = LedgerWriter(
        lambda: open_store(url),
        batch_size=cfg.batch_size,
        flush_interval=parse_duration(cfg.flush_interval),
        max_pending=cfg.max_pending_rows,
        metrics=LedgerMetrics.build(registry, prefix),
        where=shown(url),
    ).start()
    log.info("ledger: usage rows go to %s", shown(url))
    return _writer


def stop(timeout: float = 3.0) -> None:
    """Write what is queued (up to ``timeout`` seconds), then stop the writer."""
    global _writer
    if _writer is not None:
        _writer.stop(timeout)
    _writer = None


def submit(record: dict[str, Any]) -> None:
    writer = _writer
    if writer is not None:
        writer.submit(record)
