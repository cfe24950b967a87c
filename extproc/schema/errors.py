"""A validation failure as the client API words it: the parameter's path and what was wrong.

OpenAI names the parameter (``param``) as ``messages[0].content`` and says what it expected
("Invalid type for 'stop': expected a string or an array, but got an integer instead.");
Anthropic's messages read ``messages.0.content: Input should be a valid list``. Both come
from pydantic's errors: the location, with the labels of union members left out, and the
error's kind.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import ErrorDetails

# pydantic error types, as the JSON type a client should have sent.
_EXPECTED = {
    "dict_type": "an object",
    "list_type": "an array",
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "none_required": "null",
    "model_attributes_type": "an object",  # a tagged union's input that is no object
}

# A tagged union's errors about its tag, which pydantic locates at the object: the tag's key is
# the parameter at fault.
_TAG_ERRORS = frozenset({"union_tag_invalid", "union_tag_not_found"})


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def location(body: Any, loc: tuple[int | str, ...], missing: bool) -> tuple[int | str, ...]:
    """``loc`` without the union members' labels: only the steps the request itself has.

    A missing key is the one step that is not in the request.
    """
    path: list[int | str] = []
    here = body
    for i, step in enumerate(loc):
        key = isinstance(here, dict) and isinstance(step, str) and step in here
        index = isinstance(here, list) and isinstance(step, int) and 0 <= step < len(here)
        if key or index:
            here = here[step]
        elif not (missing and i == len(loc) - 1):  # else: the absent key itself
            continue  # a union member's label ("<text>", "str", "list[str]")
        path.append(step)
    return tuple(path)


def openai_param(path: tuple[int | str, ...]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def anthropic_param(path: tuple[int | str, ...]) -> str:
    return ".".join(str(step) for step in path)


def _located(body: Any, error: ErrorDetails) -> tuple[int | str, ...]:
    if error["type"] in _TAG_ERRORS:
        key = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        return (*location(body, error["loc"], False), key)
    return location(body, error["loc"], error["type"] == "missing")


def worst(body: Any, errors: list[ErrorDetails]) -> tuple[tuple[int | str, ...], list[ErrorDetails]]:
    """The errors to report: the first top-level parameter's, at its deepest path.

    A union reports one error per member; the member that got furthest into the value
    is the one the client meant (a content array with a bad part, not a content string),
    and members failing at the same place combine ("a string or an array").
    """
    located = [(_located(body, e), e) for e in errors]
    first = located[0][0][:1]
    mine = [(path, e) for path, e in located if path[:1] == first]
    deepest = max(len(path) for path, _ in mine)
    at = next(path for path, _ in mine if len(path) == deepest)
    return at, [e for path, e in mine if path == at]


def openai_message(param: str, errors: list[ErrorDetails]) -> tuple[str, str]:
    """(message, code) in OpenAI's wording."""
    first = errors[0]
    kind = first["type"]
    if kind in ("missing", "union_tag_not_found"):
        return f"Missing required parameter: '{param}'.", "missing_required_parameter"
    expected = [_EXPECTED[e["type"]] for e in errors if e["type"] in _EXPECTED]
    if expected:
        wanted = " or ".join(dict.fromkeys(expected))
        got = json_type(first["input"])
        return f"Invalid type for '{param}': expected {wanted}, but got {got} instead.", "invalid_type"
    if kind in ("literal_error", "union_tag_invalid"):
        ctx = first.get("ctx", {})
        supported = ctx.get("expected", ctx.get("expected_tags", ""))
        value = ctx["tag"] if kind == "union_tag_invalid" else first["input"]
        return (
            f"Invalid value for '{param}': {value!r}. Supported values are: {supported}.",
            "invalid_value",
        )
    if kind == "string_too_long":
        limit = first.get("ctx", {}).get("max_length")
        return (
            f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(first['input'])} instead.",
            "string_above_max_length",
        )
    return f"Invalid value for '{param}': {first['msg']}.", "invalid_value"


def anthropic_message(param: str, errors: list[ErrorDetails]) -> str:
    """Anthropic's wording: ``path: what pydantic says``."""
    first = errors[0]
    if first["type"] == "union_tag_not_found":
        return f"{param}: Field required"
    if first["type"] == "union_tag_invalid":
        return f"{param}: Input should be {first.get('ctx', {}).get('expected_tags')}"
    if first["type"] in _EXPECTED and len(errors) > 1:
        wanted = " or ".join(dict.fromkeys(_EXPECTED[e["type"]] for e in errors if e["type"] in _EXPECTED))
        return f"{param}: Input should be {wanted}"
    return f"{param}: {first['msg']}"
