"""One HTTP client for the guardrail services of this process (webhooks, moderation APIs).

The session is made on first use, in the running event loop, and kept: connections to a
guardrail service are reused across requests. ``post_json`` returns the status and the parsed
body, or raises ``GuardCallError`` for anything that is not a JSON answer in time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("gateway.guardrails")

_session: aiohttp.ClientSession | None = None
_loop: asyncio.AbstractEventLoop | None = None
# Envoy waits ``limits.sidecarTimeout`` for each ext_proc reply: a guard's call must end before it,
# or Envoy's timeout (not the guard's failureMode) decides. Set from the config at startup.
_budget = 4.5


def set_budget(sidecar_timeout: float) -> None:
    global _budget
    _budget = max(0.1, sidecar_timeout - 0.5)


DEFAULT_TIMEOUT = 10.0  # agentgateway's


def call_timeout(configured: float | None, what: str) -> float:
    """The configured timeout (default 10 s), or less when Envoy would give up on the sidecar first."""
    if configured is None:
        return min(DEFAULT_TIMEOUT, _budget)
    if configured <= _budget:
        return configured
    log.warning(
        "%s: timeout %gs is not below config.limits.sidecarTimeout; it gets %gs", what, configured, _budget
    )
    return _budget


class GuardCallError(Exception):
    """The service could not be asked, or its answer could not be read (the message says why)."""


def session() -> aiohttp.ClientSession:
    global _session, _loop
    loop = asyncio.get_running_loop()
    if _session is None or _session.closed or _loop is not loop:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )
        _loop = loop
    return _session


async def post_json(url: str, body: Any, headers: dict[str, str], timeout: float) -> tuple[int, Any]:
    data = orjson.dumps(body)
    try:
        async with session().post(
            url,
            data=data,
            headers={**headers, "content-type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except TimeoutError:
        raise GuardCallError(f"no answer within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise GuardCallError(f"cannot reach {url}: {exc.__class__.__name__}") from None
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise GuardCallError(f"the answer (HTTP {status}) is not JSON") from None
    return status, parsed
