"""``gateway quotas show|set|adjust|reset``: the admin API's /v1/quotas from the command line.

The counters live in the serving extproc (its in-process store) or in Redis, so the CLI asks the
running gateway rather than reading them itself. Where: ``--admin-url``, else ``config.adminApi``
of ``--config`` (default policies/gateway.yaml). The token: ``--token``, else
``$GATEWAY_ADMIN_TOKEN``, else ``config.adminApi.token`` as the sidecar resolves it.

Budgets speak dollars: ``set group_id=marketing --usd 400``, ``adjust user_id=alice --usd -2.50``
(sent as ``limit_usd``/``delta_usd``: the API converts, exactly to the micro-dollar), and the
table shows their amounts in dollars.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from extproc.config.loader import ConfigError


class CliError(Exception):
    """What went wrong; ``code`` is the exit status: 2 for the caller's mistake, 1 otherwise."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    quotas = sub.add_parser("quotas", help="read, set, adjust and reset quotas (through the admin API)")
    qsub = quotas.add_subparsers(dest="quotas_cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "subject", help="whom: group_id=marketing, user_id=alice, api_key_id=KEY (a,b for both)"
        )
        p.add_argument("--quota", help="which quota, when several apply (an id `show` lists)")
        p.add_argument("--admin-url", help="http://127.0.0.1:15030 (default: --config's adminApi)")
        p.add_argument("--token", help="the admin token (default: $GATEWAY_ADMIN_TOKEN, else adminApi.token)")
        p.add_argument("--config", default="policies/gateway.yaml", help="without --admin-url: its adminApi")
        p.add_argument("--format", choices=["table", "json"], default="table")

    common(qsub.add_parser("show", help="used, limit and remaining of a subject's quotas"))
    p = qsub.add_parser("set", help="override the limit for the subject (takes effect on the next request)")
    common(p)
    p.add_argument(
        "limit", nargs="?", help="the new limit (requests, tokens, micro-dollars per period), or `clear`"
    )
    p.add_argument("--usd", help="a budget's new limit in dollars, e.g. 12.50 (instead of LIMIT)")
    p = qsub.add_parser("adjust", help="add usage to this period (a negative number takes it back)")
    common(p)
    p.add_argument("delta", nargs="?", type=int, help="e.g. 5000, or -5000 to give 5000 back")
    p.add_argument("--usd", help="dollars to charge a budget: 2.50, or -2.50 to credit (instead of DELTA)")
    common(qsub.add_parser("reset", help="this period's usage back to zero"))


def _target(args: argparse.Namespace) -> tuple[str, str]:
    url, token = args.admin_url, args.token or os.environ.get("GATEWAY_ADMIN_TOKEN")
    if url is None or token is None:
        from extproc.config.loader import load
        from extproc.gateway import resolve_secret

        cfg = load(str(Path(args.config))).config.config.admin_api
        if cfg is None:
            raise CliError(f"{args.config}: no config.adminApi; name one with --admin-url")
        host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        url = url or f"http://{host}:{cfg.port}"
        token = token or resolve_secret(cfg.token)[0]
    if not token:
        raise CliError("no admin token: give --token, or set GATEWAY_ADMIN_TOKEN")
    return url.rstrip("/"), token


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url, token = _target(args)
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = exc.reason
        mistake = 400 <= exc.code < 500 and exc.code not in (401, 403)
        raise CliError(f"{exc.code}: {message}", 2 if mistake else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach the admin API at {url}: {getattr(exc, 'reason', exc)}", 1) from None


def run(args: argparse.Namespace) -> int:
    try:
        base = {"subject": args.subject} | ({"quota": args.quota} if args.quota else {})
        if args.quotas_cmd == "show":
            query = urllib.parse.urlencode(base)
            got = _call(args, "GET", f"/v1/quotas?{query}")
        elif args.quotas_cmd == "set":
            if _one_of(args.limit, args.usd, "LIMIT"):
                change = {"limit_usd": _dollars(args.usd)}
            else:
                change = {"limit": None if args.limit == "clear" else _limit(args.limit)}
            got = _call(args, "POST", "/v1/quotas/set", base | change)
        elif args.quotas_cmd == "adjust":
            usd = _one_of(args.delta, args.usd, "DELTA")
            change = {"delta_usd": _dollars(args.usd)} if usd else {"delta": args.delta}
            got = _call(args, "POST", "/v1/quotas/adjust", base | change)
        else:
            got = _call(args, "POST", "/v1/quotas/reset", base)
    except CliError as exc:
        print(f"gateway quotas: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print("gateway quotas: " + "; ".join(str(i) for i in exc.issues), file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(got, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(table(got))
    return 0


def _limit(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise CliError(f"limit: {text!r} is not a whole number (or `clear`)") from None
    if value < 0:
        raise CliError("limit: 0 or more")
    return value


def _one_of(amount: object, usd: str | None, name: str) -> bool:
    """True for dollars (--usd), False for the positional amount; exactly one is given."""
    if (amount is None) == (usd is None):
        raise CliError(f"give {name} or --usd (dollars, for a budget), one of them")
    return usd is not None


def _dollars(text: str) -> float:
    """The number as typed (``12.50``, ``$12.50``, ``1,000``): the API checks its range and decimals."""
    try:
        value = float(text.strip().lstrip("$").replace(",", "").replace("_", ""))
    except ValueError:
        raise CliError(f"--usd: {text!r} is not an amount of dollars (e.g. 12.50)") from None
    if not math.isfinite(value):
        raise CliError(f"--usd: {text!r} is not an amount of dollars (e.g. 12.50)")
    return value


def table(got: dict[str, Any]) -> str:
    rows = [("quota", "unit", "period", "limit", "used", "remaining", "resets in")]
    for q in got["quotas"]:
        usd = "limit_usd" in q  # a budget: its amounts in dollars
        amount, suffix, unit = (_usd, "_usd", "usd") if usd else (_count, "", q["unit"])
        limit = amount(q["limit" + suffix])
        if q["override"] is not None:
            limit += f" (override; configured {amount(q['configured' + suffix])})"
        name = q["quota"] + (" [shadow]" if q["shadow"] else "")
        used, left = amount(q["used" + suffix]), amount(q["remaining" + suffix])
        rows.append((name, unit, q["period"], limit, used, left, _duration(q["resets_in_seconds"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"subject: {got['subject']}"]
    for r in rows:
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _count(value: float) -> str:
    return f"{value:,}"


def _usd(value: float) -> str:
    """Dollars with cents, and the micro-dollars when there are any: ``$12.50``, ``$0.000125``."""
    text = f"{value:,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _duration(seconds: int) -> str:
    """The two largest units: ``29d 23h``, ``59m 2s``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return " ".join(parts[:2]) or "0s"
