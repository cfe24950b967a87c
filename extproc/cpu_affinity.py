"""Keeping an extproc worker on one CPU (``gateway run --extproc-cpus``, ``extproc --cpu``).

A worker is one Python event loop plus grpc's own threads (its poller and event engine) and the
gateway's writer threads. Every ext_proc message crosses from grpc's threads to the event loop
and back; when the scheduler has them on different CPUs, each crossing wakes an idle CPU, which
on a virtual machine costs tens to hundreds of microseconds. With all of a worker's threads on
one CPU the crossing is a plain context switch: measured on a 2-vCPU VM (README "Performance"),
about 0.2 ms less per request at concurrency 1 and no less throughput, since the GIL lets only
one of the threads run Python at a time anyway.

Off by default, as nginx's ``worker_cpu_affinity`` and Redis's ``server_cpulist`` are: pinning
suits a host or container whose CPUs the gateway does not share blindly (containers without a
cpuset all see CPU 0 first). ``auto`` gives worker n the n-th CPU this process may use.
"""

from __future__ import annotations

import os

OFF = "off"
AUTO = "auto"


class AffinityError(ValueError):
    """A CPU list that cannot be used here: the message names the value and why."""


def allowed() -> list[int]:
    """The CPUs this process may run on, in order (all of them where the OS cannot say)."""
    get = getattr(os, "sched_getaffinity", None)
    if get is None:
        return list(range(os.cpu_count() or 1))
    return sorted(get(0))


def parse(spec: str, usable: list[int] | None = None) -> list[int] | None:
    """``off`` -> None; ``auto`` -> every usable CPU; ``0,2-3`` -> those CPUs, each usable."""
    text = spec.strip().lower()
    if text in ("", OFF):
        return None
    usable = allowed() if usable is None else usable
    if text == AUTO:
        return list(usable)
    cpus: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise AffinityError(
                f"{spec!r}: {part.strip()!r} is not a CPU number or range (use off, auto or 0,2-3)"
            ) from None
        if first < 0 or last < first:
            raise AffinityError(f"{spec!r}: {part.strip()!r} is not a CPU range (low-high, low first)")
        cpus += [c for c in range(first, last + 1) if c not in cpus]
    missing = [c for c in cpus if c not in usable]
    if missing:
        raise AffinityError(
            f"{spec!r}: CPU {', '.join(map(str, missing))} is not one this process may use "
            f"(it may use {_ranges(usable)})"
        )
    return cpus


def for_worker(cpus: list[int] | None, n: int) -> int | None:
    """Worker n's CPU: the list's n-th, round the list again when there are more workers."""
    return None if not cpus else cpus[n % len(cpus)]


def pin(cpu: int) -> None:
    """Keep this process on ``cpu``: every thread it has now, and (inherited) every later one."""
    set_affinity = getattr(os, "sched_setaffinity", None)
    if set_affinity is None:
        raise AffinityError("pinning to a CPU needs Linux (os.sched_setaffinity)")
    parse(str(cpu))  # one this process may use, or the same error as --extproc-cpus gives
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            set_affinity(tid, {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError as exc:
            raise AffinityError(f"CPU {cpu}: {exc.strerror}") from None


def _ranges(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5", as /proc's Cpus_allowed_list writes it."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
