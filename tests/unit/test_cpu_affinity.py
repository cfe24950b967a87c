"""extproc/cpu_affinity.py: the CPU list a user writes, which worker gets which CPU, and a
pinned process whose every thread (started before or after) stays on that CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from extproc import cpu_affinity
from extproc.cpu_affinity import AffinityError, for_worker, parse


@pytest.mark.parametrize(
    ("spec", "cpus"),
    [
        ("off", None),
        ("", None),
        (" OFF ", None),
        ("auto", [0, 1, 2, 3]),
        ("2", [2]),
        ("0,2-3", [0, 2, 3]),
        ("3,1-2,3", [3, 1, 2]),  # the order written, each CPU once
    ],
)
def test_a_cpu_list_is_read_as_written(spec: str, cpus: list[int] | None) -> None:
    assert parse(spec, usable=[0, 1, 2, 3]) == cpus


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fast", "'fast': 'fast' is not a CPU number or range (use off, auto or 0,2-3)"),
        ("0,x", "'0,x': 'x' is not a CPU number or range"),
        ("3-1", "'3-1': '3-1' is not a CPU range (low-high, low first)"),
        ("1,4,7", "'1,4,7': CPU 4, 7 is not one this process may use (it may use 0-2,5)"),
    ],
)
def test_a_cpu_list_that_cannot_be_used_is_refused_naming_the_value(spec: str, message: str) -> None:
    with pytest.raises(AffinityError) as err:
        parse(spec, usable=[0, 1, 2, 5])
    assert str(err.value).startswith(message)


def test_auto_is_the_cpus_this_process_may_use() -> None:
    assert parse("auto") == cpu_affinity.allowed() == sorted(os.sched_getaffinity(0))


def test_worker_n_gets_the_nth_cpu_round_the_list_again() -> None:
    assert [for_worker([4, 6], n) for n in range(5)] == [4, 6, 4, 6, 4]
    assert for_worker(None, 0) is None
    assert for_worker([], 3) is None


_PIN_CHILD = """
import os, sys, threading, time
from extproc import cpu_affinity
stop = threading.Event()
before = threading.Thread(target=stop.wait, daemon=True); before.start()
cpu_affinity.pin(int(sys.argv[1]))
after = threading.Thread(target=stop.wait, daemon=True); after.start()
time.sleep(0.05)
for tid in sorted(os.listdir("/proc/self/task")):
    for line in open(f"/proc/self/task/{tid}/status"):
        if line.startswith("Cpus_allowed_list:"):
            print(line.split(":")[1].strip())
"""


@pytest.mark.skipif(
    len(cpu_affinity.allowed()) < 2,
    reason="on a one-CPU machine a pinned and an unpinned thread both show CPU 0: the test could not fail",
)
def test_a_pinned_process_keeps_every_thread_on_its_cpu() -> None:
    cpu = cpu_affinity.allowed()[-1]  # the last one: not what an unpinned thread would show
    out = subprocess.run(
        [sys.executable, "-c", _PIN_CHILD, str(cpu)], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert len(out) == 3  # the main thread, the one started before pinning, the one after
    assert out == [str(cpu)] * 3


def test_pinning_to_a_cpu_this_process_may_not_use_is_refused_naming_it() -> None:
    with pytest.raises(AffinityError, match="'4095': CPU 4095 is not one this process may use"):
        cpu_affinity.pin(4095)
