"""The per-request usage log: one JSON object per line on stdout, written off the event loop.

The request path only puts the record on a queue; a background thread writes it,
so a slow terminal, pipe or disk never stalls a request. Operational logs go to
stderr, so stdout carries nothing but these records.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson

_logger = logging.getLogger("gateway.usage")
_listener: logging.handlers.QueueListener | None = None


class _JSONLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(record.msg).decode()


def start(stream: Any = None) -> None:
    """Route usage records to ``stream`` (stdout by default) through a writer thread."""
    global _listener
    stop()
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(_JSONLine())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(q, handler)
    _listener.start()
    _logger.handlers = [logging.handlers.QueueHandler(q)]
    _logger.setLevel(logging.INFO)
    _logger.propagate = False


def stop() -> None:
    """Flush what is queued and stop the writer thread."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def write(record: dict[str, Any]) -> None:
    # QueueHandler.prepare would format msg with args; a dict msg with no args is kept as it is.
    _logger.info(record)


atexit.register(stop)
