"""What every mock handler works with: the server's state, one request's context, content types."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import orjson
from aiohttp import web

from extproc.mock.controls import Controls
from extproc.mock.conversation import JSON

# The peer's fixture corpus sits beside a checkout (../shared), as the conformance tests find it.
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared/conformance/agentgateway/response"
DEFAULT_FIXTURE_DIR = Path(os.environ.get("MOCK_FIXTURE_DIR", str(_BESIDE_CHECKOUT)))
RECORD_LIMIT = 200

CT_JSON = "application/json"
CT_SSE = "text/event-stream"
CT_EVENTSTREAM = "application/vnd.amazon.eventstream"


class BadRequest(Exception):
    """Raised by handlers to answer 400 in the provider's own error shape."""


@dataclass
class MockState:
    force_status: int | None
    name: str
    fixture_dir: Path
    requests: deque[JSON] = field(default_factory=lambda: deque(maxlen=RECORD_LIMIT))
    fixtures: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _ids: count[int] = field(default_factory=lambda: count(1))

    def next_id(self) -> int:
        return next(self._ids)

    def label(self, provider: str) -> str:
        return f"{provider}[{self.name}]" if self.name else provider


STATE = web.AppKey("mock_state", MockState)


@dataclass(slots=True)
class Ctx:
    request: web.Request
    state: MockState
    body: bytes
    controls: Controls
    provider: str
    params: dict[str, str]

    def json(self) -> JSON:
        try:
            parsed = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise BadRequest("Request body must be a JSON object.")
        return parsed


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]
