"""The two kinds of auth mechanism a route's policies build, and what they share.

An **authenticator** (apiKey, jwtAuth) looks for its kind of credential: it returns the
Caller when one is valid, None when none of its kind was presented, and raises
Unauthenticated when one is invalid (unless its mode is permissive: then None).

An **authorizer** (modelAccess, authorization, opa, openfga) decides for a known (or anonymous)
caller: it returns None or a Grant to allow, and raises a Denial to refuse. One that decides per
model also answers ``allowed_models`` for ``GET /v1/models``.

Each keeps its own caches and reloads its own files; ``start`` runs once in the serving loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiohttp

from extproc.authz.caller import Caller, Grant
from extproc.authz.request import AuthRequest


@dataclass
class AuthContext:
    """What mechanisms share: where relative policy files are, one HTTP client, background tasks."""

    config_dir: Path
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.config_dir / p

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=5),
            )
        return self._session

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task (a file watcher, a refresh) kept alive until close()."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()


class Authenticator(Protocol):
    name: str
    mode: str  # strict | optional | permissive

    async def start(self) -> None: ...

    async def authenticate(self, req: AuthRequest) -> Caller | None: ...


class Authorizer(Protocol):
    name: str

    async def start(self) -> None: ...

    async def authorize(self, req: AuthRequest, caller: Caller) -> Grant | None: ...


@runtime_checkable
class ModelFilter(Protocol):
    """An authorizer that decides per model: which of ``models`` may this caller use?"""

    async def allowed_models(self, req: AuthRequest, caller: Caller, models: list[str]) -> list[str]: ...
