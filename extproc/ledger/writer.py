"""The ledger's background writer: the request path never waits on a database.

``submit`` turns a usage record into a row and appends it to a bounded deque (no I/O, no lock: an
append is atomic, and a ``queue.Queue`` put and get cost about 15 us a row in locks and condition
wake-ups, measured in bench/obs_profile.py); a daemon thread takes rows in batches (``batchSize``
rows, or what came within ``flushInterval`` of the first) and writes each batch in one transaction.
The thread is woken only by a batch's first row and by a full batch, not by every row.

When the database cannot be written (down, locked, a dropped connection), the batch is kept and
retried with backoff (0.1 s doubling to 5 s), reconnecting each time. Meanwhile new rows wait in
the queue, up to ``maxPendingRows``; past that a new row is dropped (never a queued one: the
oldest rows are the ones already owed), counted in ``ledger_rows_dropped_total`` and logged
once per outage. Dropping rather than spilling to disk: the stdout usage log has every record,
and ``gateway usage import`` backfills the ledger from it, idempotently.

Retries are safe because every write is idempotent by request id (store.py). ``stop`` writes what
is queued (retrying until its deadline) before the thread ends: the sidecar calls it on SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from extproc.ledger.schema import Row, row_of
from extproc.ledger.store import Store

log = logging.getLogger("gateway.ledger")

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0


@dataclass
class LedgerMetrics:
    written: Counter
    dropped: Counter
    failures: Counter
    pending: Gauge

    @classmethod
    def build(cls, registry: CollectorRegistry | None, prefix: str = "agentgateway") -> LedgerMetrics:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, namespace=prefix, registry=registry)

        return cls(
            written=counter("ledger_rows_written", "Usage rows written to the ledger (new ones)."),
            dropped=counter("ledger_rows_dropped", "Usage rows dropped: the ledger was unwritable too long."),
            failures=counter("ledger_write_failures", "Ledger batches that failed and were retried."),
            pending=Gauge(
                "ledger_pending_rows",
                "Usage rows waiting for the ledger.",
                namespace=prefix,
                registry=registry,
                multiprocess_mode="livesum",
            ),
        )


class LedgerWriter:
    def __init__(
        self,
        connect: Callable[[], Store],
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_pending: int = 100_000,
        metrics: LedgerMetrics | None = None,
        where: str = "",
    ) -> None:
        self.connect = connect
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.where = where  # for log lines (the URL without its password)
        self.metrics = metrics or LedgerMetrics.build(None)
        self.max_pending = max_pending
        self._rows: deque[Row] = deque()
        self._wake = threading.Event()  # set by a batch's first row, a full batch and stop()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._store: Store | None = None
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)

    def start(self) -> LedgerWriter:
        self._thread.start()
        return self

    def submit(self, record: dict[str, Any]) -> None:
        """From the request path: queue the record's row, never block."""
        rows = self._rows
        waiting = len(rows)
        if waiting >= self.max_pending:
            self.metrics.dropped.inc()
            if not self._dropping:
                self._dropping = True
                log.error(
                    "ledger: %d rows are waiting for %s; new usage rows are dropped until it is written "
                    "(ledger_rows_dropped_total counts them; the stdout usage log still has them)",
                    self.max_pending,
                    self.where,
                )
            return
        rows.append(row_of(record))
        if waiting == 0 or waiting + 1 >= self.batch_size:
            self._wake.set()

    def stop(self, timeout: float = 3.0) -> int:
        """Write what is queued, for up to ``timeout`` seconds; the number of rows left unwritten."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 1)
        return len(self._rows)

    # --- the writer thread ------------------------------------------------------------------------

    def _take(self) -> list[Row]:
        """The next batch: waits for a first row, then up to flushInterval for more (none when stopping)."""
        rows = self._rows
        while not rows:
            if self._stopping.is_set():
                return []
            self._wake.wait(0.1)
            self._wake.clear()
        linger_until = time.monotonic() + self.flush_interval
        while len(rows) < self.batch_size and not self._stopping.is_set():
            wait = linger_until - time.monotonic()
            if wait <= 0:
                break
            self._wake.wait(wait)  # a full batch wakes it early
            self._wake.clear()
        n = min(len(rows), self.batch_size)
        popleft = rows.popleft
        return [popleft() for _ in range(n)]

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        failing_since: float | None = None
        batch: list[Row] = []
        while True:
            if not batch:
                batch = self._take()
                if not batch:
                    break  # stopping, and everything is written
            self.metrics.pending.set(len(self._rows) + len(batch))
            try:
                if self._store is None:
                    self._store = self.connect()
                self.metrics.written.inc(self._store.insert(batch))
            except Exception as exc:
                self.metrics.failures.inc()
                self._close()
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.error("ledger: cannot write to %s (%s); retrying with backoff", self.where, exc)
                if time.monotonic() + backoff > self._deadline:
                    lost = len(batch) + len(self._rows)
                    log.error("ledger: stopping with %d usage rows unwritten to %s", lost, self.where)
                    return
                if self._stopping.is_set():
                    time.sleep(backoff)  # wait() would return at once: the event is set
                else:
                    self._stopping.wait(backoff)  # stop() cuts a long backoff short
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            batch = []
            backoff = BACKOFF_START_S
            if failing_since is not None:
                log.warning(
                    "ledger: writing to %s again after %.1fs", self.where, time.monotonic() - failing_since
                )
                failing_since = None
            self._dropping = False
            self.metrics.pending.set(len(self._rows))
        self.metrics.pending.set(0)
        self._close()

    def _close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; dropped anyway
                self._store.close()
            self._store = None
