"""The watchdog's restart policy, with real child processes and short timings."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extproc.restart import Backoff, Watchdog, describe_exit


def test_backoff_doubles_from_a_tenth_of_a_second_to_five() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_exits_are_described() -> None:
    assert describe_exit(2) == "exited with 2"
    assert describe_exit(-9) == "killed by SIGKILL"


class Children:
    """Starts ``python -c <code>`` per name, output to a log file, and remembers every start."""

    def __init__(self, tmp: Path, code: str) -> None:
        self.tmp, self.code = tmp, code
        self.started: list[subprocess.Popen[bytes]] = []
        self.current: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def restarted(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.current[name] = proc

    def last_line(self, name: str) -> str:
        lines = (self.tmp / f"{name}.log").read_text().splitlines()
        return lines[-1] if lines else ""

    def watchdog(self, backoff: Backoff) -> Watchdog:
        return Watchdog(self.spawn, self.restarted, self.last_line, backoff, poll=0.01)

    def first(self, dog: Watchdog, name: str) -> None:
        argv = [sys.executable, "-c", self.code]
        dog.watch(name, argv, self.spawn(name, argv))

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def run_for(dog: Watchdog, seconds: float) -> None:
    dog.start()
    try:
        time.sleep(seconds)
    finally:
        dog.stop()


def test_a_child_that_cannot_start_is_retried_with_capped_backoff_and_said_to_keep_failing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    children = Children(tmp_path, "print('config error: no such field', flush=True); raise SystemExit(2)")
    dog = children.watchdog(Backoff(first=0.05, most=0.2, stable_after=10, warn_after=3))
    children.first(dog, "authz")
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.supervisor"):
            run_for(dog, 2.5)
    finally:
        children.stop()
    # 0.05, 0.1, 0.2, then every 0.2 s (plus the interpreter's start-up each time): never a tight loop,
    # never given up on.
    assert 4 <= dog.restarts["authz"] <= 14, dog.restarts
    exits = [r for r in caplog.records if "exited with 2" in r.getMessage()]
    assert [r.levelno for r in exits[:2]] == [logging.WARNING, logging.WARNING]
    assert exits[2:] and all(r.levelno == logging.ERROR for r in exits[2:])
    said = exits[-1].getMessage()
    assert said.startswith("authz exited with 2: config error: no such field; it keeps failing"), said
    assert "retrying every 0.2s" in said


def test_a_child_that_stays_up_a_while_starts_its_backoff_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    children = Children(tmp_path, "import time; time.sleep(0.25)")
    dog = children.watchdog(Backoff(first=0.05, most=5, stable_after=0.2, warn_after=2))
    children.first(dog, "mock")
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.supervisor"):
            run_for(dog, 1.5)
    finally:
        children.stop()
    assert dog.restarts["mock"] >= 3
    exits = [r for r in caplog.records if "exited with 0" in r.getMessage()]
    assert exits and all("restarting in 0.1s" in r.getMessage() for r in exits), [
        r.getMessage() for r in exits
    ]
    assert all(r.levelno == logging.WARNING for r in exits)


def test_a_forgotten_child_is_not_restarted(tmp_path: Path) -> None:
    children = Children(tmp_path, "import time; time.sleep(0.1)")
    dog = children.watchdog(Backoff(first=0.01))
    children.first(dog, "extproc")
    children.first(dog, "extproc-1")
    dog.forget("extproc")
    try:
        run_for(dog, 0.6)
    finally:
        children.stop()
    assert "extproc" not in dog.restarts and dog.restarts["extproc-1"] >= 1
    assert set(children.current) == {"extproc-1"}
