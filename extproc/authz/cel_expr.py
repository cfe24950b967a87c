"""CEL expressions for ``authorization`` rules: compiled once, checked when the config loads.

Kept apart from the rules themselves (rules.py) so the config models can compile a rule
without importing the authz sidecar. A rule that does not parse, or that names a variable a
rule never has (``jtw.sub``), is a config error naming its field; everything else (a missing
claim, a wrong type) can only be known per request.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import cel
from cel import stdlib

# What a rule can read (agentgateway's names): see rules.py for what each holds.
VARIABLES = ("jwt", "apiKey", "request", "llm", "source")

# The cel-go style extension functions (``split``, ``lowerAscii``, ``math.greatest``, ...), which the
# Rust CEL core lacks. They are Python callbacks, so a request registers only those its rules call.
EXTENSIONS: dict[str, Any] = dict(stdlib.STDLIB_FUNCTIONS)
_NAMESPACES = frozenset(name.split(".", 1)[0] for name in EXTENSIONS if "." in name)

# Names a comprehension macro binds (``jwt.groups.exists(g, g == "eng")`` binds g): the parser
# reports them as variables, but they are not the context's.
_BOUND = re.compile(r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
# cel's parse errors read "ERROR: <input>:1:4: Syntax error: ... | 1 + | ...^": keep the first line.
_PARSE_ERROR = re.compile(r"<input>:(\d+):(\d+):\s*([^\n|]*)")


class CelError(ValueError):
    """An expression that cannot be a rule; the message is for the operator."""


@lru_cache(maxsize=1024)
def compile_expression(source: str) -> cel.Program:
    """The compiled program (cached: the config check and the sidecar share one compile)."""
    if not source.strip():
        raise CelError("empty CEL expression")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        m = _PARSE_ERROR.search(str(exc))
        # The parser's "expecting {...}" token list says more about the grammar than the rule.
        what = m.group(3).split(" expecting ", 1)[0].strip() if m else str(exc)
        detail = f"{what} at line {m.group(1)}, column {m.group(2)}" if m else what
        raise CelError(f"invalid CEL expression {source!r}: {detail}") from None
    unknown = set(program.variables()) - set(VARIABLES) - set(_BOUND.findall(source)) - _NAMESPACES
    if unknown:
        names = ", ".join(sorted(unknown))
        known = ", ".join(VARIABLES)
        raise CelError(f"CEL expression {source!r} uses unknown variable {names}: rules can use {known}")
    return program


def fields_used(sources: list[str]) -> dict[str, frozenset[str] | None]:
    """For each variable the expressions use, the fields they read (None: the whole value).

    Converting a value into CEL costs microseconds per string, so a request hands the rules only
    the fields they name: ``jwt.groups`` and ``jwt["email"]`` are fields; any other use of ``jwt``
    (``size(jwt)``, ``jwt[key]``, the name inside a string literal) asks for all of it.
    """
    out: dict[str, frozenset[str] | None] = {}
    for var in VARIABLES:
        fields: set[str] | None = set()
        used = False
        for source in sources:
            for m in re.finditer(rf"(?<![.\w]){re.escape(var)}(?!\w)", source):
                used = True
                rest = source[m.end() :]
                field = _FIELD.match(rest)
                if field is None:
                    fields = None
                elif fields is not None:
                    fields.add(field.group(1) or field.group(2) or field.group(3))
        if used:
            out[var] = None if fields is None else frozenset(fields)
    return out


_FIELD = re.compile(r"""\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([^"\\]*)"\s*\]|\[\s*'([^'\\]*)'\s*\])""")


def extensions_for(programs: list[cel.Program]) -> dict[str, Any]:
    """The extension functions these programs call (``math.greatest`` is reported as ``greatest``)."""
    called = {name for p in programs for name in p.functions()}
    return {
        name: fn for name, fn in EXTENSIONS.items() if name in called or name.rsplit(".", 1)[-1] in called
    }
