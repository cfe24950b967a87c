"""bench/hot_profile.py's first measured run under callgrind, instrumented alone: instructions per
request, which other processes' load does not change (thread CPU time on a shared machine varies
by a third from run to run).

    PYTHONHASHSEED=0 valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \\
        --callgrind-out-file=/tmp/cg.out .venv/bin/python bench/hot_callgrind.py --requests 200 --route openai

Then sum the ``totals:`` of /tmp/cg.out*-01 (the event loop's thread; -02 and on are the writer
threads) and divide by the requests. About two minutes a route; compare two commits side by side.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("hot_profile", HERE / "hot_profile.py")
assert spec is not None and spec.loader is not None
hot = importlib.util.module_from_spec(spec)
sys.modules["hot_profile"] = hot
spec.loader.exec_module(hot)

_drive = hot.drive
_calls = 0


def _instrument(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True)


async def drive(proc: Any, msgs: list[bytes], n: int) -> None:
    """The warm-up runs uninstrumented; the first measured run (and the writer threads meanwhile) is."""
    global _calls
    _calls += 1
    if _calls != 2:
        await _drive(proc, msgs, n)
        return
    _instrument(True)
    await _drive(proc, msgs, n)
    await asyncio.sleep(1.2)  # the writer threads' share (the ledger lingers 1 s)
    _instrument(False)


hot.drive = drive

if __name__ == "__main__":
    sys.argv[0] = str(HERE / "hot_profile.py")
    if "--repeat" not in sys.argv:
        sys.argv += ["--repeat", "1"]
    raise SystemExit(hot.main())
