"""The in-process Rego engine (regorus, through ``opa_eval``), reloaded when its files change.

A ``.rego`` file and an optional JSON data file are polled for changes about once a second; a
new engine is built off the event loop and swapped in whole. A file that does not compile (or
data that is not a JSON object) is logged with its file and line and the last good policy stays;
at start the same fault is an ``OpaLoadError``, so the sidecar does not serve a policy it lacks.

Evaluation runs inline on the event loop: regorus answers in microseconds, and each engine is
used from that one thread only (a reload builds the next one in a worker and hands it over).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opa_eval

log = logging.getLogger("gateway.authz")

# regorus reports "--> file:line:col" and then "error: what".
_WHERE = re.compile(r"-->\s*(.+?):(\d+):(\d+)")
_WHAT = re.compile(r"^error:\s*(.+)$", re.M)
_RULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class OpaLoadError(Exception):
    """A policy or data file that cannot be used; the message names file and line."""


def query_of(path: str) -> str:
    """opa-envoy-plugin's ``path`` (``envoy/authz/allow``) as a Rego query."""
    bare = path.strip("/")
    if not _RULE_PATH.match(bare):
        raise OpaLoadError(f"opa path {path!r} is not a rule path like envoy/authz/allow")
    return "data." + bare.replace("/", ".")


def describe(exc: Exception, file: Path) -> str:
    """``file:line:col: what`` from regorus' error text (or the text itself)."""
    text = str(exc)
    where = _WHERE.search(text)
    what = _WHAT.search(text)
    detail = what.group(1).strip() if what else text.strip().splitlines()[0]
    if where:
        return f"{file}:{where.group(2)}:{where.group(3)}: {detail}"
    return f"{file}: {detail}"


def _read_data(data: Path) -> str:
    try:
        text = data.read_text()
    except OSError as exc:
        raise OpaLoadError(f"{data}: cannot read: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OpaLoadError(f"{data}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise OpaLoadError(f"{data}: OPA data must be a JSON object")
    return text


def build(rego: Path, data: Path | None, query: str) -> opa_eval.OpaEval:
    """A compiled engine for ``query``; OpaLoadError naming file and line if it cannot be."""
    data_json = _read_data(data) if data is not None else None
    if not rego.is_file():
        raise OpaLoadError(f"{rego}: no such policy file")
    try:
        engine = opa_eval.OpaEval(str(rego), data_json=data_json, query=query)
    except RuntimeError as exc:
        raise OpaLoadError(describe(exc, rego)) from None
    try:
        engine.evaluate_parsed("{}")
    except RuntimeError as exc:
        # Any other failure may be this input's alone; a missing rule is every input's.
        if "not a valid rule path" in str(exc):
            raise OpaLoadError(f"{rego}: the policy defines no rule {query}") from None
    return engine


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # mid-save (rename) or removed: keep what we have
    return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)


class RegoEngine:
    def __init__(self, rego: Path, data: Path | None, query: str, *, poll_interval: float = 1.0) -> None:
        self.rego = rego
        self.data = data
        self.query = query
        self.poll_interval = poll_interval
        self._engine: opa_eval.OpaEval | None = None
        self._stamps: tuple[_Stamp | None, ...] = ()
        self.reloads = 0  # good loads after the first (for tests and logs)

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.rego, self.data) if self.data is not None else (self.rego,)

    def _stamp_all(self) -> tuple[_Stamp | None, ...]:
        return tuple(_stamp(f) for f in self.files)

    def _load(self) -> tuple[opa_eval.OpaEval, tuple[_Stamp | None, ...]]:
        # Stamps first: a change during the build is seen on the next poll, not lost.
        stamps = self._stamp_all()
        return build(self.rego, self.data, self.query), stamps

    async def start(self, spawn: Any) -> None:
        """Load now (OpaLoadError if the files cannot be used), then watch them with ``spawn``."""
        self._engine, self._stamps = await asyncio.to_thread(self._load)
        log.info("opa: loaded %s (%s)", self.rego, self.query)
        spawn(self._watch())

    def evaluate(self, input_json: str) -> Any:
        assert self._engine is not None, "start() first"
        return self._engine.evaluate_parsed(input_json)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.reload_if_changed()
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("opa: reloading %s failed", self.rego)

    async def reload_if_changed(self) -> bool:
        """Load the files again if they changed; True if a new policy is in use."""
        stamps = await asyncio.to_thread(self._stamp_all)
        if stamps == self._stamps or None in stamps:
            return False
        try:
            engine, stamps = await asyncio.to_thread(self._load)
        except OpaLoadError as exc:
            self._stamps = stamps  # report this version once, not every poll
            log.error("opa: %s (keeping the last good policy)", exc)
            return False
        self._engine, self._stamps = engine, stamps
        self.reloads += 1
        log.info("opa: reloaded %s", self.rego)
        return True
