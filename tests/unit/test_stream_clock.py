"""Which of a stream's deadlines passed is told by the deadlines, not by the clock read when the
timer fired: event loops fire timers up to a clock tick early (asyncio's clock resolution,
libuv's whole milliseconds), and a stream cut at its maximum was once reported as idle."""

from __future__ import annotations

import time

import pytest

from extproc.pipeline.stream_clock import StreamClock


def clock(last_chunk: float) -> StreamClock:
    return StreamClock(request=5.0, idle=0.5, most=1.0, sent_at=0.0, last_chunk=last_chunk)


@pytest.mark.parametrize("early", [0.0, 0.001, 0.004])
def test_a_timer_fired_a_tick_before_the_maximum_still_reports_the_maximum(early: float) -> None:
    now = time.monotonic()
    started = now - 1.0 + early  # the maximum is due `early` seconds from now
    c = clock(last_chunk=now - 0.08)  # a chunk 80 ms ago: idle is not due for 0.42 s
    assert c.due(started, started, streaming=True) == pytest.approx(started + 1.0)
    code, message = c.expired(started)
    assert code == "stream_max_duration" and "1s" in message


@pytest.mark.parametrize("early", [0.0, 0.001, 0.004])
def test_silence_reports_the_idle_timeout_even_a_tick_early(early: float) -> None:
    now = time.monotonic()
    started = now - 0.3  # the maximum is 0.7 s away
    c = clock(last_chunk=now - 0.5 + early)
    assert c.due(started, started, streaming=True) == pytest.approx(now + early)
    code, message = c.expired(started)
    assert code == "stream_idle_timeout" and "0.5s" in message
