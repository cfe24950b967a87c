"""The chargeback report: totals by api_key_id, user_id, group_id, model (route, provider) over a
period, from the ledger, as a table (the shape of the blog's chargeback report), CSV or JSON.

A request belongs to the period its ``timestamp`` (arrival) is in: ``start <= timestamp < end``.
Each breakdown is one GROUP BY; the totals are one more query over the same rows, so every
breakdown's rows add up to the totals, and the totals are the ledger's sums. ``model`` is the
model that answered, else the one asked for. Every request counts in ``requests``, refused ones
too; ``unpriced`` counts the answers whose model has no price (their cost is not in ``cost_usd``).
"""

from __future__ import annotations

import csv
import datetime
import io
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc.ledger.schema import TABLE
from extproc.ledger.store import Store

DIMENSIONS = {
    "api_key_id": '"api_key_id"',
    "user_id": '"user_id"',
    "group_id": '"group_id"',
    "model": 'COALESCE("response_model", "request_model")',
    "route": '"route"',
    "provider": '"provider"',
}
MEASURES = ("requests", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "unpriced")
_SUMS = (
    "COUNT(*)",
    'COALESCE(SUM("input_tokens"), 0)',
    'COALESCE(SUM("output_tokens"), 0)',
    'COALESCE(SUM("total_tokens"), 0)',
    'COALESCE(SUM("cost_usd"), 0)',
    "COALESCE(SUM(CASE WHEN \"cost_status\" = 'unpriced' THEN 1 ELSE 0 END), 0)",
)
NONE_SHOWN = "(none)"


class ReportError(ValueError):
    """A bad period or dimension: the CLI exits 2, the admin API answers 400."""


def parse_by(values: list[str] | None) -> list[tuple[str, ...]]:
    """``--by a --by b``: two breakdowns; ``--by a,b``: one, by both. Default: by group_id."""
    breakdowns = []
    for value in values or ["group_id"]:
        dims = tuple(d.strip() for d in value.split(",") if d.strip())
        unknown = [d for d in dims if d not in DIMENSIONS]
        if unknown or not dims:
            raise ReportError(f"--by {value!r}: use one or more of {', '.join(DIMENSIONS)}")
        breakdowns.append(dims)
    return breakdowns


def parse_when(text: str, tz: datetime.tzinfo) -> datetime.datetime:
    """A date (midnight in ``tz``) or an ISO 8601 time (``tz`` when it names no offset)."""
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{text!r} is not a date (2026-11-01) or an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def parse_period(start: str | None, end: str | None, tz_name: str = "UTC") -> tuple[datetime.datetime, ...]:
    """[start, end): defaults are this calendar month in ``tz_name``."""
    try:  # UTC needs no time zone database (slim images have none)
        tz = datetime.UTC if tz_name.upper() in ("UTC", "Z") else zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"{tz_name!r} is not a time zone (use an IANA name like Europe/Berlin)") from None
    now = datetime.datetime.now(tz)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (month + datetime.timedelta(days=32)).replace(day=1)
    lo = parse_when(start, tz) if start else month
    hi = parse_when(end, tz) if end else nxt
    if hi <= lo:
        raise ReportError(
            f"the period is empty: --to ({hi.isoformat()}) is not after --from ({lo.isoformat()})"
        )
    return lo, hi


@dataclass
class Breakdown:
    by: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    start: datetime.datetime
    end: datetime.datetime
    totals: dict[str, Any]
    breakdowns: list[Breakdown]
    generated: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))


def _measures(values: tuple[Any, ...]) -> dict[str, Any]:
    # Sums come back as int, float or Decimal depending on the database: one type per measure.
    return {m: float(v) if m == "cost_usd" else int(v) for m, v in zip(MEASURES, values, strict=True)}


def build(
    store: Store, start: datetime.datetime, end: datetime.datetime, by: list[tuple[str, ...]]
) -> Report:
    p = store.placeholder
    where = f'WHERE "timestamp" >= {p} AND "timestamp" < {p}'
    params = [store.bound(start), store.bound(end)]
    sums = ", ".join(_SUMS)
    totals = _measures(store.query(f"SELECT {sums} FROM {TABLE} {where}", params)[0])
    breakdowns = []
    for dims in by:
        exprs = ", ".join(DIMENSIONS[d] for d in dims)
        sql = f"SELECT {exprs}, {sums} FROM {TABLE} {where} GROUP BY {exprs}"
        rows = [
            {**dict(zip(dims, r[: len(dims)], strict=True)), **_measures(r[len(dims) :])}
            for r in store.query(sql, params)
        ]
        # The biggest spenders first, as the blog's report lists them; ties in a stable order.
        rows.sort(key=lambda r: (-r["cost_usd"], -r["requests"], [str(r[d] or "") for d in dims]))
        breakdowns.append(Breakdown(dims, rows))
    return Report(start, end, totals, breakdowns)


# --- formats ---------------------------------------------------------------------------------------


def to_json(report: Report) -> bytes:
    return orjson.dumps(
        {
            "from": report.start.isoformat(),
            "to": report.end.isoformat(),
            "generated": report.generated.isoformat(timespec="seconds"),
            "totals": report.totals,
            "breakdowns": [{"by": list(b.by), "rows": b.rows} for b in report.breakdowns],
        },
        option=orjson.OPT_INDENT_2,
    )


def to_csv(report: Report) -> str:
    """One row per group of every breakdown; ``by`` names the breakdown (``group_id+user_id``)."""
    dims = list(dict.fromkeys(d for b in report.breakdowns for d in b.by))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["by", *dims, *MEASURES, "from", "to"])
    period = [report.start.isoformat(), report.end.isoformat()]
    for b in report.breakdowns:
        for r in b.rows:
            w.writerow(["+".join(b.by), *(r.get(d) or "" for d in dims), *_cells(r), *period])
    return out.getvalue()


def _cells(r: dict[str, Any]) -> list[str]:
    return [
        *(str(r[m]) for m in MEASURES[:4]),
        f"{r['cost_usd']:.10f}".rstrip("0").rstrip("."),
        str(r["unpriced"]),
    ]


def to_table(report: Report) -> str:
    rule, thin = "=" * 91, "-" * 91
    t = report.totals
    lines = [
        rule,
        "  CHARGEBACK REPORT",
        rule,
        f"Period: {report.start.isoformat()} to {report.end.isoformat()} (end excluded)",
        f"Report Generated: {report.generated.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"Total Requests: {t['requests']:,}",
        f"Total Tokens: {t['total_tokens']:,} ({t['input_tokens']:,} input, {t['output_tokens']:,} output)",
        f"Total Cost: ${t['cost_usd']:.6f}",
    ]
    if t["unpriced"]:
        lines.append(f"Unpriced: {t['unpriced']:,} answers from models with no price (not in the cost)")
    for b in report.breakdowns:
        name = " + ".join(b.by).upper()
        head = f"{' / '.join(b.by):<28}{'Requests':>10}{'Input':>13}{'Output':>13}{'Total':>13}{'Cost':>14}"
        lines += ["", rule, f"BY {name}", rule, head, thin]
        for r in b.rows:
            key = " / ".join(str(r[d]) if r[d] is not None else NONE_SHOWN for d in b.by)
            lines.append(_table_row(key, r))
        lines += [thin, _table_row("TOTAL", t)]
    return "\n".join(lines) + "\n"


def _table_row(key: str, r: dict[str, Any]) -> str:
    cost = f"${r['cost_usd']:.6f}"
    shown = key if len(key) <= 27 else key[:26] + "~"
    return (
        f"{shown:<28}{r['requests']:>10,}{r['input_tokens']:>13,}{r['output_tokens']:>13,}"
        f"{r['total_tokens']:>13,}{cost:>14}"
    )


FORMATS = {
    "table": (to_table, "text/plain"),
    "csv": (to_csv, "text/csv"),
    "json": (to_json, "application/json"),
}


def render(report: Report, fmt: str) -> tuple[bytes, str]:
    """The report in ``fmt`` and its content type."""
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r}: use table, csv or json")
    fn, ctype = FORMATS[fmt]
    body = fn(report)
    return (body if isinstance(body, bytes) else body.encode()), ctype
