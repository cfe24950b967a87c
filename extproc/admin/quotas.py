"""``/v1/quotas``: read, set, adjust and reset one subject's quotas (extproc/limits/managed.py).

- ``GET /v1/quotas?subject=group_id=marketing[&quota=ID]``: every quota of the subject (or one);
- ``POST /v1/quotas/set`` ``{"subject", "quota"?, "limit": N | null}``: an override (null clears it);
- ``POST /v1/quotas/adjust`` ``{"subject", "quota"?, "delta": N}``: add usage, or take it back (< 0);
- ``POST /v1/quotas/reset`` ``{"subject", "quota"?}``: the current period's usage back to zero.

Each answers ``{"subject", "quotas": [...]}`` as the quotas are after the change. ``quota`` may be
left out of a change when only one applies to the subject. Bad input is a 400 whose
``error.param`` names the field; no such quota a 404; the store unreachable a 503.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from extproc.admin.server import AdminContext, error
from extproc.limits.managed import QuotaError, Subject

# Lua numbers are doubles: a limit or delta past 2**53 would lose its units.
MAX = 2**53
FIELDS = {
    "set": ("subject", "quota", "limit"),
    "adjust": ("subject", "quota", "delta"),
    "reset": ("subject", "quota"),
}


def _bad(message: str, param: str | None) -> QuotaError:
    return QuotaError(400, message, "bad_request", param)


def _whole(body: dict[str, Any], name: str, low: int, what: str) -> int:
    if name not in body:
        raise _bad(f"{name}: required ({what})", name)
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX:
        raise _bad(f"{name}: {value!r} is not {what}", name)
    return value


def _quota(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _bad("quota: a quota id, as GET /v1/quotas lists them", "quota")
    return value


async def _body(request: web.Request, op: str) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not JSON ({exc})", None) from None
    if not isinstance(body, dict):
        raise _bad("the body is a JSON object: " + ", ".join(FIELDS[op]), None)
    for name in body:
        if name not in FIELDS[op]:
            raise _bad(f"{name}: unknown field (this takes {', '.join(FIELDS[op])})", name)
    return body


def routes(ctx: AdminContext) -> list[web.RouteDef]:
    manager = None if ctx.limits is None else ctx.limits.manager()

    def answer(subject: Subject, rows: list[dict[str, Any]]) -> web.Response:
        return web.json_response(
            {"subject": str(subject), "quotas": rows}, dumps=lambda o: orjson.dumps(o).decode()
        )

    async def guarded(request: web.Request, op: str) -> web.Response:
        if manager is None:
            return error(404, "this process serves no rate limits", "quotas_unavailable")
        try:
            if op == "read":
                subject = Subject.parse(request.query.get("subject"))
                return answer(subject, await manager.read(subject, _quota(request.query.get("quota"))))
            body = await _body(request, op)
            subject = Subject.parse(body.get("subject"))
            quota = _quota(body.get("quota"))
            if op == "set":
                limit = (
                    None
                    if body.get("limit", 0) is None
                    else _whole(body, "limit", 0, "a whole number, 0 or more, or null")
                )
                rows = [await manager.set(subject, quota, limit)]
            elif op == "adjust":
                delta = _whole(body, "delta", -MAX, "a whole number, < 0 to take usage back")
                rows = [await manager.adjust(subject, quota, delta)]
            else:
                rows = await manager.reset(subject, quota)
        except QuotaError as exc:
            return error(exc.status, exc.message, exc.code, exc.param)
        return answer(subject, rows)

    async def read(request: web.Request) -> web.Response:
        return await guarded(request, "read")

    async def set_limit(request: web.Request) -> web.Response:
        return await guarded(request, "set")

    async def adjust(request: web.Request) -> web.Response:
        return await guarded(request, "adjust")

    async def reset(request: web.Request) -> web.Response:
        return await guarded(request, "reset")

    return [
        web.get("/v1/quotas", read),
        web.post("/v1/quotas/set", set_limit),
        web.post("/v1/quotas/adjust", adjust),
        web.post("/v1/quotas/reset", reset),
    ]
