"""``GET /v1/usage/report?from=&to=&by=&format=&tz=``: the chargeback report (extproc/ledger/report.py),
the same as ``gateway usage report``. ``by`` repeats (``by=group_id&by=user_id``: two breakdowns)
or takes a list (``by=group_id,user_id``: one, by both); ``format`` is json (default), csv or table."""

from __future__ import annotations

import asyncio

from aiohttp import web

from extproc.admin.server import AdminContext, error
from extproc.ledger import report
from extproc.ledger.store import open_store


def _report(url: str, query: dict[str, list[str]]) -> tuple[bytes, str]:
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    start, end = report.parse_period(one("from"), one("to"), one("tz") or "UTC")
    by = report.parse_by(query.get("by"))
    fmt = one("format") or "json"
    if fmt not in report.FORMATS:
        raise report.ReportError(f"format {fmt!r}: use table, csv or json")
    store = open_store(url)  # a connection per report: reports are rare, and threads do not share one
    try:
        return report.render(report.build(store, start, end, by), fmt)
    finally:
        store.close()


def routes(ctx: AdminContext) -> list[web.RouteDef]:
    async def usage_report(request: web.Request) -> web.Response:
        if ctx.ledger_url is None:
            return error(404, "the usage ledger is off (config.ledger.enabled: false)", "ledger_disabled")
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        try:
            body, ctype = await asyncio.to_thread(_report, ctx.ledger_url, query)
        except report.ReportError as exc:
            return error(400, str(exc), "bad_report_request")
        except Exception as exc:  # the database is down or unreadable: say so, never a stack trace
            return error(503, f"the ledger cannot be read ({type(exc).__name__})", "ledger_unavailable")
        return web.Response(body=body, content_type=ctype, charset="utf-8")

    return [web.get("/v1/usage/report", usage_report)]
