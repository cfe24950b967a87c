"""One HTTP client for the guardrail services of this process (webhooks, moderation APIs).

The session is made on first use, in the running event loop, and kept: connections to a
guardrail service are reused across requests. ``post_json`` returns the status and the parsed
body, or raises ``GuardCallError`` for anything that is not a JSON answer in time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

_session: aiohttp.ClientSession | None = None
_loop: asyncio.AbstractEventLoop | None = None


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
