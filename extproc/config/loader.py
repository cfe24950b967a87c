"""Load the gateway's YAML config, keeping the line of every field.

Errors name file, line and field (``gateway.yaml:12: binds[0].listeners[0]...``),
so the loader records where each mapping key and sequence item came from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from extproc.config.model import GatewayConfig

Loc = tuple[str | int, ...]

# ``${NAME}`` or ``${NAME:-default}`` in any string is read from the environment
# when the config loads. A bare ``$NAME`` (backendAuth.key) is resolved by the
# sidecar instead, so a secret never lands in a rendered file.
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        return default if default is not None else m.group(0)

    return _ENV_REF.sub(sub, value)


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


@dataclass
class LoadedConfig:
    config: GatewayConfig
    path: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        return nearest_line(self.lines, loc)


def nearest_line(lines: dict[Loc, int], loc: Loc) -> int | None:
    # A missing field has no line of its own: report its parent's.
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _to_python(node: yaml.Node, loc: Loc, lines: dict[Loc, int], file: str) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                str(yaml.safe_load(yaml.serialize(key_node)))
                if key_node.tag != "tag:yaml.org,2002:str"
                else key_node.value
            )
            if key in out:
                raise ConfigError(
                    [ConfigIssue(file, key_node.start_mark.line + 1, _fmt((*loc, key)), "duplicate key")]
                )
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, (*loc, key), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*loc, i), lines, file) for i, item in enumerate(node.value)]
    return (
        yaml.safe_load(yaml.serialize(node))
        if node.tag != "tag:yaml.org,2002:str"
        else expand_env(node.value)
    )


def _fmt(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_path(loc: Loc) -> str:
    """A field's location as the errors print it: ``keys[1].expires``."""
    return _fmt(loc)


def _node_lines(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*loc, key.value)] = key.start_mark.line + 1
            _node_lines(value, (*loc, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*loc, i), out)


def read_yaml(text: str, file: str) -> tuple[Any, dict[Loc, int]]:
    """A policy file's YAML (no ``${VAR}`` expansion) and each field's line, for errors that
    name file, line and field; ConfigError when it is not YAML."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigIssue(file, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}")]
        ) from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    return data, lines


def parse_text(text: str, file: str = "<config>") -> LoadedConfig:
    """Parse and validate config text; raise ConfigError naming each bad field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        if problem == "expected <block end>, but found '-'":
            # The seed's custom regex patterns sit at the indentation of ``rules:``, not under it.
            problem += (
                " (a list item at the indentation of the keys above it: indent it under the key"
                " whose list it belongs to)"
            )
        raise ConfigError([ConfigIssue(file, line, "", f"invalid YAML: {problem}")]) from None
    if node is None:
        raise ConfigError([ConfigIssue(file, None, "", "the config is empty")])
    lines: dict[Loc, int] = {}
    data = _to_python(node, (), lines, file)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, lines.get(()), "", "the config must be a mapping")])
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues_from(exc, lines, file)) from None
    loaded = LoadedConfig(config=config, path=file, lines=lines)
    problems = config.semantic_problems()
    if problems:
        raise ConfigError([ConfigIssue(file, loaded.line_of(loc), _fmt(loc), msg) for loc, msg in problems])
    return loaded


def _issues_from(exc: ValidationError, lines: dict[Loc, int], file: str) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        # pydantic adds the name of a union member or validator to loc; drop those.
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-")))
        )
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown or unsupported field"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        issues.append(ConfigIssue(file, nearest_line(lines, loc), _fmt(loc), msg))
    return issues


def load(path: str | Path) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(p), None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_text(text, str(p))
