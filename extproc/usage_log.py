"""The per-request usage log: one JSON object per line on stdout, written off the event loop.

The request path only puts the encoded line on a queue; a background thread writes
it, so a slow terminal, pipe or disk never stalls a request. Woken by a line, the thread
lingers a little (``_LINGER``) and then writes every line queued by then with one call: one
wake-up and one syscall for many lines under load, not a wake-up, a GIL hand-off and a write
per line. Operational logs go to stderr, so stdout carries nothing but these records.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson

_STOP = b""
_BATCH = 256  # lines per write at most
# How long the writer waits after a first line for others (seconds): at 400 requests/s, eight
# lines a wake-up. A record reaches stdout that much later at most.
_LINGER = 0.02
_queue: queue.SimpleQueue[bytes] | None = None
_thread: threading.Thread | None = None


def _drain(q: queue.SimpleQueue[bytes], out: BinaryIO) -> None:
    stop = False
    while not stop:
        lines: list[bytes] = []
        line = q.get()
        if line is not _STOP:
            time.sleep(_LINGER)
        while True:
            if line is _STOP:
                stop = True
                break
            lines.append(line)
            if q.empty() or len(lines) >= _BATCH:
                break
            line = q.get_nowait()
        try:
            if lines:
                out.write(b"".join(lines))
                out.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not kill the writer
            pass


def start(out: BinaryIO | None = None) -> None:
    """Write usage records to ``out`` (stdout by default) from a writer thread."""
    global _queue, _thread
    stop()
    _queue = queue.SimpleQueue()
    _thread = threading.Thread(
        target=_drain, args=(_queue, out or sys.stdout.buffer), name="usage-log", daemon=True
    )
    _thread.start()


def stop() -> None:
    """Write what is queued, then stop the writer thread."""
    global _queue, _thread
    if _queue is not None and _thread is not None:
        _queue.put(_STOP)
        _thread.join(timeout=5)
    _queue, _thread = None, None


def write(record: dict[str, Any]) -> None:
    q = _queue
    if q is not None:
        q.put(orjson.dumps(record) + b"\n")


atexit.register(stop)
