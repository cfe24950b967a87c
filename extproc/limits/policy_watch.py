"""A policy file (``rateLimits``, ``budgets``) kept current while extproc runs.

Loaded when extproc starts (a file that does not parse then stops it, like a bad config), then
polled for changes in the background (inode, mtime and size, every ``interval`` seconds, off the
event loop: editors that save by rename are seen too). A change that does not parse is logged
with file and line and the last good descriptors stay in force; a deleted file keeps them too
(limits do not vanish because a file was moved away for a moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from extproc.config.loader import ConfigError, ConfigIssue
from extproc.limits.policy_file import parse_policy

log = logging.getLogger("gateway.limits")

Stamp = tuple[int, int, int] | None
T = TypeVar("T")


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: Path) -> tuple[Stamp, str]:
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        return (st.st_ino, st.st_mtime_ns, st.st_size), f.read().decode("utf-8", "replace")


def load_policy(path: Path, parse: Callable[[str, str], Any] = parse_policy) -> Any:
    """The file now; ConfigError (file, line, field) if it cannot be read or does not parse."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    return parse(text, str(path))


class WatchedPolicy(Generic[T]):
    """``parse`` reads the file's text (a rateLimits file unless told); ``what`` names it in logs."""

    def __init__(
        self,
        path: Path,
        domain: str | None = None,
        interval: float = 1.0,
        parse: Callable[[str, str], T] = parse_policy,  # type: ignore[assignment]
        what: str = "rate limits",
    ) -> None:
        self.path = path
        self.domain = domain
        self.interval = interval
        self.parse = parse
        self.what = what
        self._stamp = _stamp(path)
        self.current: T = self._checked(load_policy(path, parse))
        self._task: asyncio.Task[None] | None = None

    def _checked(self, policy: T) -> T:
        if self.domain is not None and getattr(policy, "domain", None) != self.domain:
            raise ConfigError(
                [
                    ConfigIssue(
                        str(self.path),
                        1,
                        "domain",
                        f"is {getattr(policy, 'domain', None)!r}, the route names {self.domain!r}",
                    )
                ]
            )
        return policy

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any one bad read
                log.exception("%s: reloading %s failed; keeping the last good file", self.what, self.path)

    async def refresh(self) -> bool:
        """Re-read the file if it changed; True when new descriptors are in force."""
        stamp = await asyncio.to_thread(_stamp, self.path)
        if stamp == self._stamp:
            return False
        if stamp is None:
            self._stamp = None
            log.error("%s: %s is gone; keeping the last good file", self.what, self.path)
            return False
        try:
            stamp, text = await asyncio.to_thread(_read, self.path)
        except OSError as exc:
            log.error("%s: cannot read %s: %s; keeping the last good file", self.what, self.path, exc)
            return False
        self._stamp = stamp
        try:
            policy = self._checked(await asyncio.to_thread(self.parse, text, str(self.path)))
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("%s: %s (keeping the last good file)", self.what, issue)
            return False
        self.current = policy
        log.info("%s: loaded %s", self.what, self.path)
        return True
