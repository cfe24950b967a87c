"""The budgets' clock: the wall clock, or, for tests only, the wall clock plus an offset read
from a file.

``GATEWAY_TEST_CLOCK_FILE`` (an environment variable of the extproc process; unset in
production, and nothing a client sends can set it) names a file holding seconds to add to
``time.time()``, such as ``2678400`` (31 days ahead). Tests write the file to move the gateway
into the next budget period through the real Envoy. The rate limit stages and the admin API
(extproc/limits/context.py) read the same clock, so a change finds the counter requests use.
It is read on every call (tests change it while the gateway runs); a missing or unreadable
file counts as 0. Unset, the clock is ``time.time`` itself: no file is looked at.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gateway.limits")

ENV = "GATEWAY_TEST_CLOCK_FILE"


def offset_clock(path: Path) -> Callable[[], float]:
    def now() -> float:
        try:
            offset = float(path.read_text().strip() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return time.time() + offset

    return now


def budget_clock() -> Callable[[], float]:
    name = os.environ.get(ENV)
    if not name:
        return time.time
    log.warning("%s is set: budget periods follow the test clock in %s (testing only)", ENV, name)
    return offset_clock(Path(name))
