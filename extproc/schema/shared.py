"""Building blocks of the client API shapes: strict scalars, open objects, tagged unions.

Every shape is strict (``"5"`` is no integer, ``true`` no number) and lists only the keys the
translators read; other keys pass unvalidated (unknown top-level fields are the field tables'
to refuse, per provider: ``extproc.translate.fields``). Null is accepted wherever a key is
optional, since both APIs treat it as absent.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, Tag, with_config

# Strict: no coercion between JSON types; no NaN or infinity (orjson never parses them anyway).
CONFIG = ConfigDict(strict=True, allow_inf_nan=False)
strict = with_config(CONFIG)

# The longest model name the gateway takes: it travels in provider paths and routing metadata,
# which Envoy bounds (a 100 kB model made the header mutation exceed Envoy's limit). Provider
# model ids, ARNs and ``publisher/model`` names are far shorter.
MAX_MODEL_CHARS = 256

Model = Annotated[str, Field(max_length=MAX_MODEL_CHARS)]
Number = float  # strict float takes JSON integers too
Object = dict[str, Any]

# Labels of union members in validation errors are wrapped in angle brackets, which no JSON key
# of either API uses, so ``errors.param_of`` can tell them from the request's own keys.
OTHER = "<other>"


def tag(name: str) -> str:
    return f"<{name}>"


def by_key(key: str, known: frozenset[str], default: str | None = None) -> Callable[[Any], str]:
    """A discriminator on ``key``: a known value picks its shape, anything else the open one.

    Open, so that a content block or tool type newer than these shapes still passes to
    providers that know it (the translators refuse what they cannot carry, naming it).
    ``default`` is the shape for an object without ``key``. Called once per block on the hot
    path: one lookup, and an exception only for what is not an object with a known kind.
    """
    tags = {name: tag(name) for name in known}

    def pick(value: Any) -> str:
        try:
            return tags[value.get(key, default)]
        except (AttributeError, KeyError, TypeError):  # not an object, unknown or unhashable kind
            return OTHER

    return pick


def tagged(key: str, shapes: dict[str, Any], other: Any, default: str | None = None) -> Any:
    """A union of ``shapes`` by the value of ``key``, with ``other`` for any other value."""
    members = [Annotated[shape, Tag(tag(name))] for name, shape in shapes.items()]
    members.append(Annotated[other, Tag(OTHER)])
    union = functools.reduce(operator.or_, members)
    return Annotated[union, Discriminator(by_key(key, frozenset(shapes), default))]
