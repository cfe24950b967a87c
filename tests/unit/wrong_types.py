"""Random wrong-type mutations of provider payloads, for the translators' robustness tests."""

from __future__ import annotations

import random
from typing import Any

WRONG: list[Any] = [None, [], 1, "x", {}, True, 1.5]


def mutate(obj: Any, rng: random.Random) -> Any:
    """Replace one value somewhere in ``obj`` with a value of the wrong type."""
    if isinstance(obj, dict) and obj:
        key = rng.choice(list(obj))
        return {**obj, key: rng.choice(WRONG) if rng.random() < 0.5 else mutate(obj[key], rng)}
    if isinstance(obj, list) and obj:
        i = rng.randrange(len(obj))
        return [*obj[:i], rng.choice(WRONG) if rng.random() < 0.5 else mutate(obj[i], rng), *obj[i + 1 :]]
    return obj
