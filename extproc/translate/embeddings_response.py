"""Each family's embeddings answer -> OpenAI's embedding items (floats, or base64 float32).

Never raises: a vector of the wrong shape becomes an empty list.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from .base import Json


def _item(index: int, vector: list[float], as_base64: bool) -> Json:
    return {"object": "embedding", "index": index, "embedding": _b64(vector) if as_base64 else vector}


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _openai_response(resp: Json, as_base64: bool) -> Json:
    """Passthrough, but fill what some compatible servers leave out (index) or ignore (base64)."""
    data = resp.get("data") if isinstance(resp, dict) else None
    if not isinstance(data, list):
        return resp
    items = []
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            items.append(item)
            continue
        item = {"object": "embedding", "index": position, **item}
        if as_base64 and isinstance(item.get("embedding"), list):
            item["embedding"] = _b64(_floats(item["embedding"]))
        items.append(item)
    return {**resp, "data": items}


def _floats(value: Any) -> list[float]:
    """A vector as floats; anything that is not a list of numbers becomes empty (never raises)."""
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        return []
    return [float(x) for x in value]


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _gemini_vectors(resp: Json) -> list[list[float]]:
    items = _list(resp.get("embeddings")) or ([resp["embedding"]] if "embedding" in resp else [])
    return [_floats(_dict(e).get("values")) for e in items]


def _vertex_vectors(resp: Json) -> list[list[float]]:
    vectors: list[list[float]] = []
    for prediction in _list(resp.get("predictions")):
        prediction = _dict(prediction)
        if "textEmbedding" in prediction:  # multimodalembedding
            vectors.append(_floats(prediction["textEmbedding"]))
        else:
            vectors.append(_floats(_dict(prediction.get("embeddings")).get("values")))
    return vectors


def _titan_vectors(resp: Json) -> list[list[float]]:
    vector = resp.get("embedding")
    if vector is None:
        vector = _dict(resp.get("embeddingsByType")).get("float")
    return [] if vector is None else [_floats(vector)]


def _cohere_vectors(resp: Json) -> list[list[float]]:
    embeddings = resp.get("embeddings")
    if isinstance(embeddings, dict):  # response_type "embeddings_by_type"
        embeddings = embeddings.get("float")
    return [_floats(v) for v in _list(embeddings)]


def _nova_vectors(resp: Json) -> list[list[float]]:
    return [_floats(_dict(e).get("embedding")) for e in _list(resp.get("embeddings"))]


_EXTRACT: dict[str, Callable[[Json], list[list[float]]]] = {
    "gemini": _gemini_vectors,
    "vertex": _vertex_vectors,
    "bedrock-titan": _titan_vectors,
    "bedrock-cohere": _cohere_vectors,
    "bedrock-nova": _nova_vectors,
}
