"""The operator-managed API keys file (``policies/api-keys.yaml``): its format, atomic writes, and
a store that reloads it while the authz sidecar runs.

The file holds only hashes: ``sha256:<64 lowercase hex>`` of the key's UTF-8 bytes. Keys the
CLI makes are 256 random bits, so an unsalted SHA-256 is enough (nobody can brute-force the
preimage), and it lets a lookup be one dict access by digest.

    version: 1
    keys:
    - id: k-3f9a0c1b2d4e
      hash: sha256:<hex>
      user: alice
      groups: [engineering]        # or group: engineering
      team: platform
      allowedModels: [gpt-4o-mini]  # omit: any model the route serves
      labels: {env: dev}
      created: 2026-01-05T10:00:00Z
      expires: 2027-01-01T00:00:00Z # optional; a date means 00:00 UTC that day
      revoked: 2026-03-01T09:00:00Z # optional; when (or true)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from extproc.config.base import Loc, Strict
from extproc.config.loader import ConfigError, ConfigIssue, field_path, nearest_line, read_yaml

log = logging.getLogger("gateway.authz")

HASH_PREFIX = "sha256:"
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
# Ids reach usage records, logs and metric labels: keep them plain.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


def hash_key(key: str) -> str:
    """The stored form of a key: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def digest_of(key_hash: str) -> bytes:
    """The raw digest of a stored hash; ValueError if it is not ``sha256:<64 hex>``."""
    value = key_hash.strip().lower()
    if not _HASH.match(value):
        raise ValueError("a key hash is sha256:<64 hex digits> (the SHA-256 of the key)")
    return bytes.fromhex(value.removeprefix(HASH_PREFIX))


def _utc(value: Any) -> Any:
    """A date is 00:00 UTC that day; a naive time is UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class KeyRecord(Strict):
    id: str
    hash: str
    user: str | None = None
    group: str | None = None
    groups: list[str] = []
    team: str | None = None
    allowed_models: list[str] | None = Field(None, alias="allowedModels")
    labels: dict[str, str] = {}
    created: datetime | None = None
    expires: datetime | None = None
    revoked: datetime | bool | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("an id is 1-64 letters, digits or . _ : @ - (starting with a letter or digit)")
        return value

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        digest_of(value)
        return value.strip().lower()

    @field_validator("created", "expires", "revoked", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return _utc(value)

    @model_validator(mode="after")
    def _group(self) -> KeyRecord:
        if self.group is not None and self.groups:
            raise ValueError("set group or groups, not both")
        return self

    def all_groups(self) -> list[str]:
        return [self.group] if self.group is not None else list(self.groups)

    def is_revoked(self) -> bool:
        return self.revoked is not None and self.revoked is not False


class KeysFile(Strict):
    version: Literal[1] = 1
    keys: list[KeyRecord] = []


@dataclass(frozen=True)
class ApiKey:
    """A key as the authenticator checks it, from the keys file or a policy's inline ``keys``."""

    id: str
    digest: bytes
    user: str = ""
    groups: list[str] = field(default_factory=list)
    team: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    allowed_models: list[str] | None = None
    expires: float | None = None  # epoch seconds
    revoked: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # an inline key's free-form metadata

    @classmethod
    def of(cls, record: KeyRecord) -> ApiKey:
        return cls(
            id=record.id,
            digest=digest_of(record.hash),
            user=record.user or "",
            groups=record.all_groups(),
            team=record.team or "",
            labels=dict(record.labels),
            allowed_models=None if record.allowed_models is None else list(record.allowed_models),
            expires=record.expires.timestamp() if record.expires else None,
            revoked=record.is_revoked(),
        )

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


# --- reading and writing ------------------------------------------------------------------------


def parse_keys(text: str, file: str) -> KeysFile:
    """The keys file's content; ConfigError naming file, line and field for each problem."""
    data, lines = read_yaml(text, file)
    if data is None:
        return KeysFile()
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, 1, "", "the keys file must be a mapping (version, keys)")])
    try:
        parsed = KeysFile.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = {"extra_forbidden": "unknown field", "missing": "required field is missing"}.get(
                err["type"], err["msg"].removeprefix("Value error, ")
            )
            issues.append(ConfigIssue(file, nearest_line(lines, loc), field_path(loc), msg))
        raise ConfigError(issues) from None
    issues = []
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    for i, rec in enumerate(parsed.keys):
        if rec.id in seen_ids:
            loc: Loc = ("keys", i, "id")
            issues.append(
                ConfigIssue(file, nearest_line(lines, loc), field_path(loc), f"duplicate id {rec.id!r}")
            )
        if rec.hash in seen_hashes:
            loc = ("keys", i, "hash")
            issues.append(
                ConfigIssue(file, nearest_line(lines, loc), field_path(loc), "the same hash as another key")
            )
        seen_ids.add(rec.id)
        seen_hashes.add(rec.hash)
    if issues:
        raise ConfigError(issues)
    return parsed


def read_keys(path: Path) -> KeysFile:
    """The keys file at ``path`` (an empty one if it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return KeysFile()
    return parse_keys(text, str(path))


_HEADER = (
    "# API keys for the gateway's apiKey policy: hashes only, never the keys themselves.\n"
    "# Managed with `gateway keys create|list|revoke`; the authz sidecar reloads it while running.\n"
)


def write_keys(path: Path, keys: KeysFile) -> None:
    """Replace the file atomically (a temp file in the same folder, then rename), so the sidecar
    never reads half a file. Mode 0600 for a new file; an existing file keeps its group and its
    group's read bit (0640: a container's group may read it), never any access for others."""
    mode, gid = 0o600, -1
    with contextlib.suppress(FileNotFoundError):
        st = path.stat()
        mode |= st.st_mode & 0o040
        gid = st.st_gid
    data = keys.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    data = {"version": keys.version, "keys": data.get("keys", [])}
    text = _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(PermissionError):  # only a member of the group may keep it
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- the reloading store ------------------------------------------------------------------------

Stamp = tuple[int, int, int] | None  # (inode, mtime ns, size); None: no file


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: Path) -> tuple[Stamp, str | None, str]:
    """The file's stamp and text from one open file, so they agree even if it is replaced; or
    why it cannot be read ("" when it does not exist)."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            return (st.st_ino, st.st_mtime_ns, st.st_size), f.read().decode("utf-8", "replace"), ""
    except FileNotFoundError:
        return None, None, ""
    except OSError as exc:
        stamp: Stamp = None
        with contextlib.suppress(OSError):
            stamp = _stamp(path)
        return stamp, None, exc.strerror or str(exc)


class KeyFileStore:
    """The keys of one keys file by digest. Loaded by ``start``, then re-read by a background task
    when the file changes (polled every ``interval`` seconds, off the event loop). A file that
    does not parse keeps the last good keys; a deleted one means no keys (deleting the file must
    not leave every key working)."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.keys: dict[bytes, ApiKey] = {}
        self._stamp: Stamp | Literal["unread"] = "unread"

    async def start(self, spawn: Callable[[Coroutine[Any, Any, Any]], object]) -> None:
        """Load now (so the first request sees the keys), then watch: ``spawn`` is AuthContext's."""
        await self.refresh()
        spawn(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any one bad read
                log.exception("api keys: reloading %s failed; keeping the last good keys", self.path)

    async def refresh(self) -> bool:
        """Re-read the file if it changed; True when the keys were replaced."""
        if await asyncio.to_thread(_stamp, self.path) == self._stamp:
            return False
        stamp, text, error = await asyncio.to_thread(_read, self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if error:
            log.error(
                "api keys: cannot read %s: %s (keeping the last good %d keys)",
                self.path,
                error,
                len(self.keys),
            )
            return False
        if text is None:
            log.warning("api keys: %s does not exist: no keys from it until it does", self.path)
            self.keys = {}
            return True
        try:
            # Parsing is CPU work on a file of any size: in the thread too.
            parsed = await asyncio.to_thread(parse_keys, text, str(self.path))
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("api keys: %s (keeping the last good %d keys)", issue, len(self.keys))
            return False
        self.keys = {k.digest: k for k in map(ApiKey.of, parsed.keys)}
        log.info("api keys: loaded %d keys from %s", len(self.keys), self.path)
        return True
