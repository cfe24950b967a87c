"""What every provider's wire format shares: a fixed timestamp and deterministic embeddings."""

from __future__ import annotations

import hashlib

from extproc.mock.conversation import word_count

CREATED = 1700000000  # fixed so responses are byte-for-byte reproducible
DEFAULT_EMBEDDING_DIMS = 16


def embedding_vector(text: str, dims: int) -> list[float]:
    """Deterministic pseudo-embedding in [-1, 1] derived from SHA-256 of the text."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(round(b / 127.5 - 1.0, 6) for b in digest)
        counter += 1
    return out[:dims]


def embedding_tokens(texts: list[str]) -> int:
    return max(1, sum(word_count(t) for t in texts))
