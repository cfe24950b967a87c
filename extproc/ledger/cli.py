"""``gateway usage report`` (the chargeback report) and ``gateway usage import`` (backfill).

Which ledger: ``--ledger URL`` (a relative SQLite path is relative to the current folder), else
the one ``--config`` names (default policies/gateway.yaml), whose default is ``ledger.db`` in
``--data-dir`` (default ``.run``, where ``make run`` keeps it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from extproc.config.loader import ConfigError
from extproc.ledger import report
from extproc.ledger.runtime import LedgerConfigError, url_of
from extproc.ledger.schema import row_of
from extproc.ledger.store import open_store

BATCH = 1000


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    usage = sub.add_parser("usage", help="the usage ledger: chargeback reports, backfill from usage logs")
    usub = usage.add_subparsers(dest="usage_cmd", required=True)

    def ledger_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ledger", help="sqlite:///path.db or postgresql://user@host/db")
        p.add_argument(
            "--config", default="policies/gateway.yaml", help="without --ledger: its config.ledger"
        )
        p.add_argument(
            "--data-dir", default=".run", help="without --ledger or config.ledger.url: ledger.db here"
        )

    p = usub.add_parser("report", help="totals by key, user, group or model over a period")
    ledger_args(p)
    p.add_argument("--from", dest="start", help="first day or time, included (default: this month's first)")
    p.add_argument("--to", dest="end", help="end day or time, excluded (default: next month's first)")
    p.add_argument(
        "--by",
        action="append",
        help=f"a breakdown: {', '.join(report.DIMENSIONS)}; repeat for more, a,b for both at once",
    )
    p.add_argument("--format", choices=list(report.FORMATS), default="table")
    p.add_argument("--tz", default="UTC", help="the time zone of dates without one (default UTC)")

    p = usub.add_parser("import", help="write usage records from usage-log files into the ledger")
    ledger_args(p)
    p.add_argument("files", nargs="+", help="JSON-lines files (the extproc sidecar's stdout); - for stdin")


def _url(args: argparse.Namespace) -> str:
    if args.ledger:
        if args.ledger.startswith("sqlite:///") and not args.ledger.startswith("sqlite:////"):
            return f"sqlite:///{Path(args.ledger.removeprefix('sqlite:///')).resolve()}"
        return args.ledger
    from extproc.config.loader import load

    config = Path(args.config)
    url = url_of(load(str(config)).config.config.ledger, config.resolve().parent, Path(args.data_dir))
    if url is None:
        raise report.ReportError(f"{config}: config.ledger.enabled is false; name one with --ledger")
    return url


def cmd_report(args: argparse.Namespace) -> int:
    start, end = report.parse_period(args.start, args.end, args.tz)
    by = report.parse_by(args.by)
    store = open_store(_url(args))
    try:
        body, _ = report.render(report.build(store, start, end, by), args.format)
    finally:
        store.close()
    sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    store = open_store(_url(args))
    seen = new = 0
    try:
        for name in args.files:
            f = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115 - closed below
            try:
                batch = []
                for line in f:
                    record = _record(line)
                    if record is not None:
                        batch.append(row_of(record))
                    if len(batch) >= BATCH:
                        new += store.insert(batch)
                        seen, batch = seen + len(batch), []
                if batch:
                    new += store.insert(batch)
                    seen += len(batch)
            finally:
                if f is not sys.stdin.buffer:
                    f.close()
    finally:
        store.close()
    print(f"{seen} usage records read, {new} new in the ledger ({seen - new} were there already)")
    return 0


def _record(line: bytes) -> dict | None:
    """A usage record, or None for anything else in the file (operational log lines)."""
    if not line.startswith(b"{"):
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    ok = isinstance(record, dict) and record.get("type") == "llm_request" and record.get("request_id")
    return record if ok else None


def run(args: argparse.Namespace) -> int:
    try:
        return {"report": cmd_report, "import": cmd_import}[args.usage_cmd](args)
    except (report.ReportError, LedgerConfigError) as exc:
        print(f"gateway usage: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"gateway usage: {args.config}: " + "; ".join(str(i) for i in exc.issues), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gateway usage: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database driver's own errors: cannot connect, no such table
        if type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg"):
            print(f"gateway usage: the ledger: {exc}", file=sys.stderr)
            return 1
        raise
