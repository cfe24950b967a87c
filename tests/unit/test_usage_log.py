"""The usage log's writer: every record, in order, and many records to a write under load."""

from __future__ import annotations

import io
import json

import pytest

from extproc import usage_log


class CountingOut(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_lines_queued_while_the_writer_lingers_go_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_log, "_LINGER", 0.3)  # long enough for a loaded machine's main thread
    out = CountingOut()
    usage_log.start(out)
    try:
        for n in range(20):
            usage_log.write({"n": n})
    finally:
        usage_log.stop()
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == list(range(20))
    assert out.writes == 1


def test_stop_writes_what_is_queued() -> None:
    out = CountingOut()
    usage_log.start(out)
    usage_log.write({"a": 1})
    usage_log.stop()
    assert out.getvalue() == b'{"a":1}\n'
