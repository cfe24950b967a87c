"""A ``rateLimits`` policy file: envoyproxy/ratelimit's YAML, read and matched the way it does.

The format (envoyproxy/ratelimit README "Configuration", src/config/config_impl.go)::

    domain: llm_gateway
    descriptors:
      - key: api_key_id            # no value: one counter per api_key_id
        rate_limit: {unit: minute, requests_per_unit: 60}
      - key: group_id
        value: marketing
        metadata: {type: tokens}   # this project's extension: count LLM tokens, not requests
        rate_limit: {unit: day, requests_per_unit: 200000}
        descriptors:               # nested: (group_id=marketing, model=...) has its own limit
          - key: model
            value: "gpt-4o*"       # a wildcard value; share_threshold: true shares one counter
            rate_limit: {unit: hour, requests_per_unit: 50000}

Keys are the caller's ``api_key_id``, ``user_id``, ``group_id``, the ``model`` and the ``route``.
The gateway is both the client and the server here: a request carries, for every path from a
top-level descriptor down through keys it has values for, that descriptor; each is matched as
envoyproxy/ratelimit matches (``key`` + exact ``value`` first, then a wildcard value, then the
``key`` alone) and the limits found all apply, less those another named in ``replaces``.
Unknown fields are errors, as the real service's are; ``metadata`` is free-form there, which is
why the ``type: tokens`` extension lives in it: the same file loads unchanged in
envoyproxy/ratelimit (which counts whatever ``hits_addend`` the client sends).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from extproc.config.loader import ConfigError, ConfigIssue, field_path, nearest_line, read_yaml
from extproc.limits.values import IDENTITY_KEYS

Loc = tuple[str | int, ...]

# Window length per unit, as envoyproxy/ratelimit divides time (src/utils/utilities.go): windows
# start at multiples of it since the Unix epoch, so a "month" is 30 days.
DIVIDERS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
    "month": 2592000,
    "year": 31536000,
}
# envoyproxy/ratelimit's validKeys: any other key in the file is an error there, and here.
_VALID = {
    "domain", "key", "value", "descriptors", "rate_limit", "unit", "requests_per_unit", "unlimited",
    "shadow_mode", "quota_mode", "name", "replaces", "detailed_metric", "value_to_metric",
    "share_threshold", "metadata",
}  # fmt: skip


@dataclass(frozen=True)
class FileLimit:
    """One ``rate_limit`` of the file, where it was, and what it counts."""

    path: str  # "group_id=marketing > model=gpt-4o*", for messages and logs
    requests_per_unit: int
    unit: str
    unlimited: bool
    shadow: bool
    tokens: bool
    name: str | None
    replaces: tuple[str, ...]

    @property
    def window(self) -> int:
        return DIVIDERS[self.unit]


@dataclass
class Node:
    key: str
    value: str | None
    limit: FileLimit | None
    share_threshold: bool
    children: Level


@dataclass
class Level:
    exact: dict[tuple[str, str], Node] = field(default_factory=dict)
    wildcard: list[tuple[str, list[str], Node]] = field(default_factory=list)
    default: dict[str, Node] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # in file order, each once


@dataclass(frozen=True)
class Match:
    limit: FileLimit
    entries: tuple[tuple[str, str], ...]  # (key, value) as the counter is named


@dataclass
class PolicyFile:
    domain: str
    root: Level

    def match(self, values: dict[str, str]) -> list[Match]:
        found = list(_walk(self.root, values, ()))
        replaced = {name for m in found for name in m.limit.replaces}
        return [m for m in found if m.limit.name is None or m.limit.name not in replaced]


def _walk(level: Level, values: dict[str, str], entries: tuple[tuple[str, str], ...]) -> Iterator[Match]:
    for key in level.keys:
        value = values.get(key)
        if value is None:
            continue
        node = level.exact.get((key, value))
        counted = value
        if node is None:
            for wkey, parts, wnode in level.wildcard:
                if wkey == key and wildcard_match(parts, value):
                    node = wnode
                    if wnode.share_threshold:  # one counter for every value the pattern matches
                        counted = wnode.value or value
                    break
        if node is None:
            node = level.default.get(key)
        if node is None:
            continue
        here = (*entries, (key, counted))
        if node.limit is not None:
            yield Match(node.limit, here)
        yield from _walk(node.children, values, here)


def wildcard_match(parts: list[str], value: str) -> bool:
    """``*`` matches any run of characters, anywhere in the pattern (envoyproxy/ratelimit's rule)."""
    if len(parts) == 1:
        return parts[0] == value
    if not value.startswith(parts[0]) or not value.endswith(parts[-1]):
        return False
    if len(value) < sum(len(p) for p in parts):
        return False
    rest = value[len(parts[0]) : len(value) - len(parts[-1])]
    for part in parts[1:-1]:
        at = rest.find(part)
        if at < 0:
            return False
        rest = rest[at + len(part) :]
    return True


# --- reading ----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, file: str, lines: dict[Loc, int]) -> None:
        self.file = file
        self.lines = lines
        self.issues: list[ConfigIssue] = []

    def problem(self, loc: Loc, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, nearest_line(self.lines, loc), field_path(loc), message))


def parse_policy(text: str, file: str) -> PolicyFile:
    """The file's descriptors; ConfigError naming file, line and field for every problem."""
    data, lines = read_yaml(text, file)
    r = _Reader(file, lines)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, 1, "", "a rate limit file is a mapping: domain, descriptors")])
    _check_keys(r, data, ())
    domain = data.get("domain")
    if not isinstance(domain, str) or not domain:
        r.problem(("domain",), "the file needs a domain (a non-empty string)")
        domain = ""
    descriptors = data.get("descriptors") or []
    root = _level(r, descriptors, ("descriptors",), "", False) if isinstance(descriptors, list) else Level()
    if not isinstance(descriptors, list):
        r.problem(("descriptors",), "descriptors is a list")
    if r.issues:
        raise ConfigError(r.issues)
    return PolicyFile(domain, root)


def _check_keys(r: _Reader, value: Any, loc: Loc) -> None:
    """Every key anywhere in the file must be one envoyproxy/ratelimit knows (metadata: any)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in _VALID:
                r.problem((*loc, k), f"unknown key {k!r} (envoyproxy/ratelimit would refuse the file)")
            elif k != "metadata":
                _check_keys(r, v, (*loc, k))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                r.problem((*loc, i), "each entry is a mapping")
            else:
                _check_keys(r, item, (*loc, i))


def _level(r: _Reader, items: list[Any], loc: Loc, parent: str, tokens: bool) -> Level:
    level = Level()
    for i, d in enumerate(items):
        here: Loc = (*loc, i)
        if not isinstance(d, dict):
            continue  # reported by _check_keys
        key, value = d.get("key"), d.get("value")
        if not isinstance(key, str) or not key:
            r.problem((*here, "key"), "a descriptor needs a key")
            continue
        if key not in IDENTITY_KEYS:
            r.problem((*here, "key"), f"unknown key {key!r}: the gateway has {', '.join(IDENTITY_KEYS)}")
            continue
        if value is not None and not isinstance(value, str | int):
            r.problem((*here, "value"), "value is a string")
            continue
        value = None if value in (None, "") else str(value)
        path = f"{parent} > " if parent else ""
        path += f"{key}={value}" if value is not None else key
        node_tokens = _tokens(r, d, here, tokens)
        share = d.get("share_threshold") is True
        if share and (value is None or "*" not in value):
            r.problem((*here, "share_threshold"), "share_threshold needs a wildcard value (with '*')")
        if d.get("quota_mode"):
            r.problem((*here, "quota_mode"), "quota_mode is not supported by the gateway")
        limit = _limit(r, d.get("rate_limit"), (*here, "rate_limit"), path, d, node_tokens)
        children = d.get("descriptors") or []
        node = Node(key, value, limit, share, _level(r, children, (*here, "descriptors"), path, node_tokens))
        composite = (key, value or "")
        if (value is None and key in level.default) or (value is not None and composite in level.exact):
            r.problem(here, f"duplicate descriptor {path!r}")
            continue
        if value is None:
            level.default[key] = node
        elif "*" in value:
            level.wildcard.append((key, value.split("*"), node))
            level.exact[composite] = node  # an exact request value equal to the pattern matches too
        else:
            level.exact[composite] = node
        if key not in level.keys:
            level.keys.append(key)
    return level


def _tokens(r: _Reader, d: dict[str, Any], loc: Loc, inherited: bool) -> bool:
    meta = d.get("metadata")
    if meta is None:
        return inherited
    if not isinstance(meta, dict):
        r.problem((*loc, "metadata"), "metadata is a mapping")
        return inherited
    kind = meta.get("type")
    if kind is None:
        return inherited
    if kind not in ("requests", "tokens"):
        r.problem((*loc, "metadata", "type"), "type is requests or tokens")
        return inherited
    return bool(kind == "tokens")


def _limit(r: _Reader, spec: Any, loc: Loc, path: str, d: dict[str, Any], tokens: bool) -> FileLimit | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        r.problem(loc, "rate_limit is a mapping")
        return None
    unlimited = spec.get("unlimited") is True
    unit = spec.get("unit")
    unit_ok = isinstance(unit, str) and unit.lower() in DIVIDERS
    if unlimited and unit is not None:
        r.problem((*loc, "unit"), "should not specify rate limit unit when unlimited")
        return None
    if not unlimited and not unit_ok:
        r.problem((*loc, "unit"), f"invalid rate limit unit {unit!r}: use {', '.join(DIVIDERS)}")
        return None
    rpu = spec.get("requests_per_unit", 0)
    if not unlimited and (not isinstance(rpu, int) or isinstance(rpu, bool) or rpu < 0):
        r.problem((*loc, "requests_per_unit"), "requests_per_unit is a whole number, 0 or more")
        return None
    name = spec.get("name")
    replaces = tuple(
        str(x.get("name")) for x in spec.get("replaces") or [] if isinstance(x, dict) and x.get("name")
    )
    if len(replaces) != len(spec.get("replaces") or []):
        r.problem((*loc, "replaces"), "each replaces entry needs a name")
    if name is not None and name in replaces:
        r.problem((*loc, "replaces"), "replaces should not contain the name of the same descriptor")
    return FileLimit(
        path=path,
        requests_per_unit=0 if unlimited else int(rpu),
        unit=unit.lower() if unit_ok else "second",
        unlimited=unlimited,
        shadow=d.get("shadow_mode") is True,
        tokens=tokens,
        name=str(name) if name is not None else None,
        replaces=replaces,
    )
