"""``gateway keys create|list|revoke``: manage the API keys file (hashes only).

``create`` prints the new key once; only its SHA-256 is written. Every change rewrites the file
atomically under a lock (``.<file>.lock`` beside it), so two commands at once lose nothing and
the running authz sidecar (which polls the file) never reads half of one.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import re
import secrets
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from extproc.authz.keyfile import KeyRecord, KeysFile, hash_key, read_keys, write_keys
from extproc.config.loader import ConfigError

DEFAULT_FILE = "policies/api-keys.yaml"
# "sk-gw-" lets secret scanners (and people) recognise a leaked gateway key.
KEY_PREFIX = "sk-gw-"

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits; no '.', so never JWT-like


def parse_expiry(value: str, now: datetime) -> datetime:
    """``30d``/``12h``/``2w`` from now, or an ISO date (00:00 UTC) or date-time (UTC if naive)."""
    m = _DURATION.match(value.strip())
    if m:
        when = now + timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    else:
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"--expires {value!r}: use a duration (30d, 12h, 2w) or a date (2027-01-01)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    if when <= now:
        raise ValueError(f"--expires {value!r} is not in the future")
    return when


def _label(value: str) -> tuple[str, str]:
    name, sep, val = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--label {value!r}: use name=value")
    return name, val


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _when(value: datetime | bool | None) -> str:
    if value is None or value is False:
        return "-"
    if value is True:
        return "yes"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_create(args: argparse.Namespace) -> int:
    path = Path(args.file)
    now = datetime.now(UTC).replace(microsecond=0)
    expires = parse_expiry(args.expires, now) if args.expires else None
    key = new_key()
    with _locked(path):
        current = read_keys(path)
        key_id = args.id or f"k-{secrets.token_hex(6)}"
        if any(k.id == key_id for k in current.keys):
            print(f"gateway keys: {path} already has a key with id {key_id!r}", file=sys.stderr)
            return 1
        record = KeyRecord.model_validate(
            {
                "id": key_id,
                "hash": hash_key(key),
                "user": args.user,
                "groups": args.group or [],
                "team": args.team,
                "allowedModels": args.model or None,
                "labels": dict(args.label or []),
                "created": now,
                "expires": expires,
            }
        )
        write_keys(path, KeysFile(version=1, keys=[*current.keys, record]))
    print(f"id:  {key_id}")
    print(f"key: {key}")
    print(f"This key is shown only once: {path} holds only its hash.", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    path = Path(args.file)
    keys = read_keys(path).keys
    if not keys:
        print(f"no keys in {path}")
        return 0
    now = datetime.now(UTC)
    rows = [("ID", "USER", "GROUPS", "TEAM", "MODELS", "EXPIRES", "STATUS")]
    for k in keys:
        status = "revoked" if k.is_revoked() else "expired" if k.expires and k.expires <= now else "active"
        models = "*" if k.allowed_models is None else ",".join(k.allowed_models) or "(none)"
        rows.append(
            (
                k.id,
                k.user or "-",
                ",".join(k.all_groups()) or "-",
                k.team or "-",
                models,
                _when(k.expires),
                status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    path = Path(args.file)
    with _locked(path):
        current = read_keys(path)
        found = [k for k in current.keys if k.id == args.id]
        if not found:
            print(f"gateway keys: no key {args.id!r} in {path}", file=sys.stderr)
            return 1
        if found[0].is_revoked():
            print(f"{args.id} was already revoked ({_when(found[0].revoked)})")
            return 0
        now = datetime.now(UTC).replace(microsecond=0)
        keys = [k.model_copy(update={"revoked": now}) if k.id == args.id else k for k in current.keys]
        write_keys(path, KeysFile(version=1, keys=keys))
    print(f"revoked {args.id}; the gateway stops accepting it within a few seconds")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="create, list and revoke API keys (the keys file holds only hashes)")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True)
    file_help = f"the keys file (default {DEFAULT_FILE}, relative to the current folder)"

    p = ksub.add_parser("create", help="make a key: printed once, only its hash is stored")
    p.add_argument("--file", default=DEFAULT_FILE, help=file_help)
    p.add_argument("--user", required=True, help="the key's owner (user_id in usage records)")
    p.add_argument("--group", action="append", help="a group (repeatable)")
    p.add_argument("--team", help="the team (group_id in usage records)")
    p.add_argument(
        "--model", action="append", help="a model the key may use, * patterns allowed (repeatable)"
    )
    p.add_argument("--label", action="append", type=_label, help="name=value (repeatable)")
    p.add_argument("--expires", help="30d, 12h, 2w, or a date: 2027-01-01")
    p.add_argument("--id", help="the key's id (default: k-<random>)")

    p = ksub.add_parser("list", help="list keys (never their hashes)")
    p.add_argument("--file", default=DEFAULT_FILE, help=file_help)

    p = ksub.add_parser("revoke", help="revoke a key by id")
    p.add_argument("--file", default=DEFAULT_FILE, help=file_help)
    p.add_argument("id")


def run(args: argparse.Namespace) -> int:
    handler = {"create": cmd_create, "list": cmd_list, "revoke": cmd_revoke}[args.keys_cmd]
    try:
        return handler(args)
    except ConfigError as exc:
        print("gateway keys: the keys file has problems:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # a bad --id, say
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            print(f"gateway keys: {where}: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a bad --expires
        print(f"gateway keys: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gateway keys: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
