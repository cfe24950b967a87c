"""A guardrail webhook speaking agentgateway's contract, for the end-to-end tests.

``POST /request`` gets ``{"body": {"messages": [...]}}``, ``POST /response`` gets
``{"body": {"choices": [{"message": ...}]}}``; it answers ``{"action": ...}``:

- text with ``reject-me`` or the phrase ``hurt them``: Reject,
  ``{"body": ..., "status_code": 422, "reason": ...}``;
- text with ``slow-please``: waits 2 s, then Pass (to trip a timeout);
- text with ``break-me``: HTTP 500;
- text with an email address: Mask, every address replaced by ``[REDACTED]``;
- anything else: Pass.

It keeps what it received (path, headers, body) for the tests to read. It runs in a thread of the
test process, on its own event loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from extproc.ports import free_port

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
REJECT_BODY = "rejected by the test webhook"


def _texts(phase: str, body: dict[str, Any]) -> list[str]:
    if phase == "request":
        return [m["content"] for m in body["body"]["messages"]]
    return [c["message"]["content"] for c in body["body"]["choices"]]


def decide(phase: str, body: dict[str, Any]) -> dict[str, Any]:
    texts = _texts(phase, body)
    joined = " ".join(texts)
    for phrase in ("reject-me", "hurt them"):
        if phrase in joined.lower():
            return {"action": {"body": REJECT_BODY, "status_code": 422, "reason": phrase}}
    if EMAIL.search(joined):
        masked = [EMAIL.sub("[REDACTED]", t) for t in texts]
        if phase == "request":
            messages = [{**m, "content": t} for m, t in zip(body["body"]["messages"], masked, strict=True)]
            return {"action": {"body": {"messages": messages}, "reason": "pii"}}
        choices = [{"message": {"role": "assistant", "content": t}} for t in masked]
        return {"action": {"body": {"choices": choices}, "reason": "pii"}}
    return {"action": {"reason": "clean"}}


@dataclass
class Webhook:
    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append({"path": request.path, "headers": dict(request.headers), "body": body})
        phase = "response" if request.path.endswith("response") else "request"
        joined = " ".join(_texts(phase, body))
        if "break-me" in joined:
            return web.Response(status=500, text="broken on purpose")
        if "slow-please" in joined:
            await asyncio.sleep(2)
        return web.json_response(decide(phase, body))

    def start(self) -> Webhook:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{tail:.*}", self.handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, name="guard-webhook", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def last(self, path: str) -> dict[str, Any]:
        return next(r for r in reversed(self.received) if r["path"] == path)
