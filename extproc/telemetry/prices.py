"""What a request cost, in USD, from its usage and a price table in LiteLLM's shape.

The table is ``model_prices_and_context_window.json`` as LiteLLM publishes it (that whole file
works as it is) or a subset of it (policies/prices.json): per model, ``input_cost_per_token``,
``output_cost_per_token``, ``cache_read_input_token_cost`` and ``cache_creation_input_token_cost``.
A model the table does not price is reported as unpriced, never given a guessed cost.

Usage counts as OTel's GenAI conventions do (extproc/translate/usage.py): input includes cache reads
and writes, output includes reasoning. So the uncached input is input minus both cache counts, and
cache tokens are charged at their own price (at the input price when the table gives none: the
provider then charges them as ordinary input).

The file is watched from a background thread (its modification time, every ``reload_interval``)
and read there, never on the event loop; readers see the old table or the new one, whole.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from extproc.translate.usage import Usage

log = logging.getLogger("gateway.prices")

# LiteLLM keys some providers' models with a prefix; the model's own name is tried after it.
_PREFIX = {"gemini": "gemini/", "vertex": "vertex_ai/", "azure": "azure/", "bedrock": "bedrock/"}
_FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Cost:
    """``status``: priced, unpriced (no price for the model), no_usage (the provider reported none)."""

    usd: float | None
    status: str
    model: str | None = None  # the table's key that priced it


NO_USAGE = Cost(None, "no_usage")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def parse_table(data: Any) -> dict[str, Price]:
    """The priced entries of a LiteLLM-shaped table; entries without input and output prices
    (LiteLLM's ``sample_spec``, image or audio models priced per unit) are left out."""
    if not isinstance(data, dict):
        raise ValueError("a price table is a JSON object: model name -> prices")
    table = {}
    for model, entry in data.items():
        if not isinstance(entry, dict):
            continue
        values = [_number(entry.get(f)) for f in _FIELDS]
        if values[0] is None or values[1] is None:
            continue
        table[model] = Price(values[0], values[1], values[2], values[3])
    return table


def cost_usd(usage: Usage, price: Price) -> float:
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    uncached = max(usage.input_tokens - cache_read - cache_write, 0)
    read_price = price.input if price.cache_read is None else price.cache_read
    write_price = price.input if price.cache_write is None else price.cache_write
    return (
        uncached * price.input
        + cache_read * read_price
        + cache_write * write_price
        + usage.output_tokens * price.output
    )


class PriceTable:
    """Lookups by model (and provider kind); ``replace`` swaps the whole table at once."""

    def __init__(self, table: dict[str, Price] | None = None) -> None:
        self._table = table or {}

    def __len__(self) -> int:
        return len(self._table)

    def replace(self, table: dict[str, Price]) -> None:
        self._table = table  # one reference: readers see the old table or the new one

    def find(self, model: str, kind: str | None) -> tuple[str, Price] | None:
        table = self._table
        prefix = _PREFIX.get(kind or "")
        for key in (f"{prefix}{model}" if prefix else None, model):
            if key is not None and (price := table.get(key)) is not None:
                return key, price
        return None

    def cost(self, usage: Usage | None, models: list[str | None], kind: str | None) -> Cost:
        """The first of ``models`` (the answering model, then the one asked for) the table prices."""
        if usage is None:
            return NO_USAGE
        for model in models:
            if model and (found := self.find(model, kind)) is not None:
                return Cost(round(cost_usd(usage, found[1]), 12), "priced", found[0])
        return Cost(None, "unpriced")


def read_table(path: Path) -> dict[str, Price]:
    return parse_table(orjson.loads(path.read_bytes()))


class PriceWatcher:
    """Reads ``path`` into ``table`` whenever its modification time changes (a daemon thread)."""

    def __init__(self, path: Path, table: PriceTable, interval: float) -> None:
        self.path = path
        self.table = table
        self.interval = interval
        self._seen: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load_now(self) -> None:
        """The first read, at startup: an unreadable or invalid file is an error the caller reports."""
        stat = self.path.stat()
        self.table.replace(read_table(self.path))
        self._seen = (stat.st_mtime_ns, stat.st_size)
        log.info("prices: %d models from %s", len(self.table), self.path)

    def poll(self) -> bool:
        """Read the file again if it changed; True if a new table is in place. A broken file keeps
        the last good table (and is logged), so an editor's half-written save cannot unprice
        every request."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            if self._seen is not None:
                log.error("prices: cannot read %s (%s); keeping the last table", self.path, exc.strerror)
                self._seen = None
            return False
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return False
        try:
            table = read_table(self.path)
        except (OSError, ValueError) as exc:
            log.error("prices: %s is not a valid price table (%s); keeping the last one", self.path, exc)
            self._seen = seen  # not retried until it changes again
            return False
        self.table.replace(table)
        self._seen = seen
        log.info("prices: reloaded %d models from %s", len(table), self.path)
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prices-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any surprise
                log.exception("prices: reload failed")
