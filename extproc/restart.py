"""Restarting the gateway's processes when they exit unasked: the supervisor's watchdog.

Each child is restarted on its own, with exponential backoff (0.1 s, doubling, at most 5 s),
and its backoff starts over once it has stayed up a while (10 s). Every unasked exit is logged
with its exit status and the last line the child printed. A child that cannot start at all (a
bad config, a port someone else holds) is not given up on: it is retried every 5 s for as long
as the gateway runs, like Kubernetes' CrashLoopBackOff, and after a few quick failures in a row
the log says so at ERROR level on each try, so it cannot go unnoticed. Giving up would stop
the gateway for a cause the operator may fix in place (the config file is re-read on each
start), while Envoy keeps answering JSON 503s meanwhile. A child that fails while the gateway
is starting is different: the start fails at once, naming it (supervisor.Stack.wait_ready).

A deliberate stop (``forget``) is never restarted.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("gateway.supervisor")

Spawn = Callable[[str, list[str]], subprocess.Popen[bytes]]


@dataclass(frozen=True)
class Backoff:
    first: float = 0.1  # seconds before the first restart
    most: float = 5.0  # the longest wait between restarts
    stable_after: float = 10.0  # up this long: the next exit restarts after ``first`` again
    warn_after: int = 5  # quick exits in a row before each is logged as an error

    def delay(self, failures: int) -> float:
        """The wait before restarting after the ``failures``-th quick exit in a row (from 1)."""
        return min(self.most, self.first * 2 ** max(0, failures - 1))


@dataclass
class _Child:
    argv: list[str]
    proc: subprocess.Popen[bytes]
    started: float
    failures: int = 0  # quick exits in a row
    due: float | None = None  # when to restart it (it has exited)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


class Watchdog:
    """Watches children from a thread and restarts those that exit unasked.

    ``spawn(name, argv)`` starts a child (the supervisor's, so logs go where they always go);
    ``on_restart(name, proc)`` tells the owner about the new process; ``last_line(name)`` is what
    the child printed last, for the log."""

    def __init__(
        self,
        spawn: Spawn,
        on_restart: Callable[[str, subprocess.Popen[bytes]], None],
        last_line: Callable[[str], str] = lambda name: "",
        backoff: Backoff | None = None,
        poll: float = 0.05,
    ) -> None:
        self._spawn = spawn
        self._on_restart = on_restart
        self._last_line = last_line
        self.backoff = backoff or Backoff()
        self._poll = poll
        self._children: dict[str, _Child] = {}
        self.lock = threading.RLock()  # held while a child is started, restarted or forgotten
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts: dict[str, int] = {}

    def watch(self, name: str, argv: list[str], proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self._children[name] = _Child(argv, proc, time.monotonic())

    def forget(self, name: str) -> None:
        """A deliberate stop: whatever happens to this child now, it is not restarted."""
        with self.lock:
            self._children.pop(name, None)

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="gateway-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No restart from now on (the owner stops the children)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self._poll):
            with self.lock:
                if self._stopping.is_set():
                    return
                for name, child in list(self._children.items()):
                    self._check(name, child, time.monotonic())

    def _check(self, name: str, child: _Child, now: float) -> None:
        if child.due is None:
            code = child.proc.poll()
            if code is None:
                if child.failures and now - child.started >= self.backoff.stable_after:
                    child.failures = 0  # it stayed up: a later crash is a new story
                return
            quick = now - child.started < self.backoff.stable_after
            child.failures = child.failures + 1 if quick else 1
            delay = self.backoff.delay(child.failures)
            child.due = now + delay
            self._log_exit(name, child, code, delay)
            return
        if now < child.due:
            return
        try:
            proc = self._spawn(name, child.argv)
        except OSError as exc:  # the program itself is gone: keep trying, as for an exit
            child.failures += 1
            child.due = now + self.backoff.delay(child.failures)
            log.error("%s could not be started: %s; retrying in %.1fs", name, exc, child.due - now)
            return
        child.proc, child.started, child.due = proc, now, None
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self._on_restart(name, proc)
        log.warning("%s restarted (pid %d)", name, proc.pid)

    def _log_exit(self, name: str, child: _Child, code: int, delay: float) -> None:
        said = self._last_line(name)
        what = f"{name} {describe_exit(code)}{f': {said}' if said else ''}"
        if child.failures >= self.backoff.warn_after:
            log.error(
                "%s; it keeps failing (%d quick exits in a row): retrying every %.1fs until it starts "
                "or the gateway is stopped",
                what,
                child.failures,
                delay,
            )
        else:
            log.warning("%s; restarting in %.1fs", what, delay)
