"""``/v1/quotas``: read, set, adjust and reset one subject's quotas (extproc/limits/managed.py).

- ``GET /v1/quotas?subject=group_id=marketing[&quota=ID]``: every quota of the subject (or one);
- ``POST /v1/quotas/set`` ``{"subject", "quota"?, "limit": N | null}``: an override (null clears it);
- ``POST /v1/quotas/adjust`` ``{"subject", "quota"?, "delta": N}``: add usage, or take it back (< 0);
- ``POST /v1/quotas/reset`` ``{"subject", "quota"?}``: the current period's usage back to zero.

Each answers ``{"subject", "quotas": [...]}`` as the quotas are after the change. ``quota`` may be
left out of a change when only one applies to the subject. Bad input is a 400 whose
``error.param`` names the field; no such quota a 404; the store unreachable a 503.

Budgets (``budget/<scope>/<period>``) count whole micro-dollars (``unit: usd_micros``), and
``limit``/``delta`` are in those; in dollars, give ``limit_usd``/``delta_usd`` instead (a number,
to the micro-dollar: ``12.5``; not both). A dollar change is for a budget: without ``quota``,
the subject's one budget is chosen among its quotas; naming a quota that counts something else
is a 400.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from extproc.admin.server import AdminContext, error
from extproc.limits.budget_file import MAX_USD, MICRO
from extproc.limits.managed import USD_MICROS, QuotaError, Subject

# Lua numbers are doubles: a limit or delta past 2**53 would lose its units.
MAX = 2**53
FIELDS = {
    "set": ("subject", "quota", "limit", "limit_usd"),
    "adjust": ("subject", "quota", "delta", "delta_usd"),
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


def _usd(body: dict[str, Any], name: str, low: int, what: str) -> int:
    """Dollars to whole micro-dollars, exactly: more decimals than that are an error, not rounded."""
    value = body[name]
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _bad(f"{name}: {value!r} is not {what}", name)
    micros = Decimal(repr(value)) * MICRO
    if micros != micros.to_integral_value():
        raise _bad(f"{name}: {value!r} has more decimals than a micro-dollar (0.000001)", name)
    if not low * MAX_USD <= value <= MAX_USD:
        raise _bad(f"{name}: {value!r} is not {what}, at most {MAX_USD:,}", name)
    return int(micros)


def _amount(body: dict[str, Any], name: str, negative: bool, nullable: bool) -> tuple[int | None, str | None]:
    """``name`` (counter units) or ``name_usd`` (dollars): the amount, and the unit it is for
    (``usd_micros`` when given in dollars, else any)."""
    dollars = f"{name}_usd"
    if name in body and dollars in body:
        raise _bad(f"{dollars}: give {name} or {dollars}, not both", dollars)
    key, unit = (dollars, USD_MICROS) if dollars in body else (name, None)
    if nullable and body.get(key, 0) is None:
        return None, unit
    sign = "< 0 to take usage back" if negative else "0 or more"
    if unit is not None:
        return _usd(body, dollars, -1 if negative else 0, f"dollars, {sign}"), unit
    null = ", or null" if nullable else ""
    what = f"a whole number, {sign}{null} (or {dollars}: dollars, for a budget)"
    return _whole(body, name, -MAX if negative else 0, what), None


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
                limit, unit = _amount(body, "limit", negative=False, nullable=True)
                rows = [await manager.set(subject, quota, limit, unit)]
            elif op == "adjust":
                delta, unit = _amount(body, "delta", negative=True, nullable=False)
                assert delta is not None  # not nullable
                rows = [await manager.adjust(subject, quota, delta, unit)]
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
