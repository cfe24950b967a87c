"""OpenAI embeddings request -> each family's request body (see ``embeddings`` for the families).

Besides the OpenAI fields the extensions listed there are read here; each is checked for its type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Json, TranslationError

_NOVA_SCHEMA_VERSION = "nova-multimodal-embed-v1"
_NOVA_DEFAULT_DIMENSION = 3072  # the model's full size, as OpenAI returns full-size vectors by default

# Native sizes of models that cannot change them: a matching ``dimensions`` is harmless and dropped.
_TITAN_V1_DIMENSION = 1536
_COHERE_V3_DIMENSION = 1024
_COHERE_V3_LIGHT_DIMENSION = 384

# ``task_type`` (Google's vocabulary) for providers that name the same idea differently.
_COHERE_INPUT_TYPE: dict[str, str] = {
    "RETRIEVAL_QUERY": "search_query",
    "RETRIEVAL_DOCUMENT": "search_document",
    "CLASSIFICATION": "classification",
    "CLUSTERING": "clustering",
}
_COHERE_INPUT_TYPES = frozenset({"search_query", "search_document", "classification", "clustering"})
_NOVA_PURPOSE: dict[str, str] = {
    "RETRIEVAL_QUERY": "GENERIC_RETRIEVAL",  # queries may search mixed-modality indexes
    "RETRIEVAL_DOCUMENT": "GENERIC_INDEX",
    "CLASSIFICATION": "CLASSIFICATION",
    "CLUSTERING": "CLUSTERING",
}
_NOVA_PURPOSES = frozenset(
    {
        "GENERIC_INDEX", "GENERIC_RETRIEVAL", "TEXT_RETRIEVAL", "IMAGE_RETRIEVAL", "VIDEO_RETRIEVAL",
        "DOCUMENT_RETRIEVAL", "AUDIO_RETRIEVAL", "CLASSIFICATION", "CLUSTERING",
    }
)  # fmt: skip

# Defaults the peer (agentgateway) uses; Vertex documents RETRIEVAL_QUERY as its own default too.
_VERTEX_DEFAULT_TASK = "RETRIEVAL_QUERY"
_COHERE_DEFAULT_INPUT_TYPE = "search_query"
_NOVA_DEFAULT_PURPOSE = "GENERIC_INDEX"


def _gemini_id(model: str) -> str:
    return model.removeprefix("models/")


def _gemini_request(req: Json, model: str) -> Json:
    name = "models/" + _gemini_id(model)
    extra: Json = {}
    task = _optional_str(req, "task_type")
    if task:
        extra["taskType"] = task
    title = _optional_str(req, "title")
    if title:
        extra["title"] = title
    dims = _dimensions(req)
    if dims is not None:
        extra["outputDimensionality"] = dims
    return {"requests": [{"model": name, "content": {"parts": [{"text": t}]}, **extra} for t in _texts(req)]}


def _vertex_request(req: Json, model: str) -> Json:
    texts = _texts(req)
    dims = _dimensions(req)
    if "multimodalembedding" in model:
        # The multimodal model takes {text} instances and names the size "dimension".
        body: Json = {"instances": [{"text": t} for t in texts]}
        if dims is not None:
            body["parameters"] = {"dimension": dims}
        return body
    base: Json = {"task_type": _optional_str(req, "task_type") or _VERTEX_DEFAULT_TASK}
    title = _optional_str(req, "title")
    if title:
        base["title"] = title
    body = {"instances": [{"content": t, **base} for t in texts]}
    params: Json = {}
    truncate = _optional_bool(req, "auto_truncate")
    if truncate is not None:
        params["autoTruncate"] = truncate
    if dims is not None:
        params["outputDimensionality"] = dims
    if params:
        body["parameters"] = params
    return body


def _titan_request(req: Json, model: str) -> Json:
    text = _single_text(req, model)
    dims = _dimensions(req)
    m = model.lower()
    if "embed-image" in m:
        body: Json = {"inputText": text}
        if dims is not None:
            body["embeddingConfig"] = {"outputEmbeddingLength": dims}
        return body
    if "text-v1" in m or "g1-text" in m:
        # Titan G1 takes inputText only; its vectors are always 1536 floats.
        _require_native_size(dims, _TITAN_V1_DIMENSION, model)
        return {"inputText": text}
    body = {"inputText": text}
    if dims is not None:
        body["dimensions"] = dims
    normalize = _optional_bool(req, "normalize")
    if normalize is not None:
        body["normalize"] = normalize
    return body


def _cohere_request(req: Json, model: str) -> Json:
    v4 = "embed-v4" in model.lower()
    body: Json = {"texts": _texts(req), "input_type": _cohere_input_type(req)}
    dims = _dimensions(req)
    if v4:
        if dims is not None:
            body["output_dimension"] = dims
    else:
        native = _COHERE_V3_LIGHT_DIMENSION if "light" in model.lower() else _COHERE_V3_DIMENSION
        _require_native_size(dims, native, model)
    truncate = _optional_bool(req, "auto_truncate")
    if truncate is not None:
        # v3 names the kept end START/END, v4 LEFT/RIGHT; auto-truncation drops the end either way.
        body["truncate"] = ("RIGHT" if v4 else "END") if truncate else "NONE"
    return body


def _cohere_input_type(req: Json) -> str:
    native = _optional_str(req, "input_type")
    if native:
        return native  # Cohere's own vocabulary, passed through for Cohere to check
    task = _optional_str(req, "task_type")
    if not task:
        return _COHERE_DEFAULT_INPUT_TYPE
    if task.lower() in _COHERE_INPUT_TYPES:
        return task.lower()
    if task.upper() in _COHERE_INPUT_TYPE:
        return _COHERE_INPUT_TYPE[task.upper()]
    raise TranslationError(
        f"task_type {task!r} has no Cohere equivalent; use one of {sorted(_COHERE_INPUT_TYPE)}", "task_type"
    )


def _nova_request(req: Json, model: str) -> Json:
    text = _single_text(req, model)
    truncate = _optional_bool(req, "auto_truncate")
    dims = _dimensions(req)
    params: Json = {
        "embeddingPurpose": _nova_purpose(req),
        "embeddingDimension": _NOVA_DEFAULT_DIMENSION if dims is None else dims,
        "text": {"truncationMode": "NONE" if truncate is False else "END", "value": text},
    }
    # schemaVersion is optional today; naming it keeps the body's meaning if the default moves.
    return {
        "schemaVersion": _NOVA_SCHEMA_VERSION,
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": params,
    }


def _nova_purpose(req: Json) -> str:
    task = _optional_str(req, "task_type")
    if not task:
        return _NOVA_DEFAULT_PURPOSE
    if task.upper() in _NOVA_PURPOSES:
        return task.upper()
    if task.upper() in _NOVA_PURPOSE:
        return _NOVA_PURPOSE[task.upper()]
    raise TranslationError(
        f"task_type {task!r} has no Nova equivalent; use one of {sorted(_NOVA_PURPOSE)}", "task_type"
    )


_REQUEST: dict[str, Callable[[Json, str], Json]] = {
    "gemini": _gemini_request,
    "vertex": _vertex_request,
    "bedrock-titan": _titan_request,
    "bedrock-cohere": _cohere_request,
    "bedrock-nova": _nova_request,
}


# ---------------------------------------------------------------- request fields


def _texts(req: Json) -> list[str]:
    """``input`` as a list of strings; token arrays only make sense to OpenAI's own tokenizer."""
    value = req.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and value and all(_is_tokens(v) for v in value):
        raise TranslationError(
            "token-array input needs an OpenAI-compatible provider; send the text instead", "input"
        )
    if isinstance(value, list) and not value:
        raise TranslationError("'input' must not be an empty array", "input")
    raise TranslationError("'input' must be a string or an array of strings", "input")


def _is_tokens(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return True  # one pre-tokenised input: [1, 2, 3]
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _single_text(req: Json, model: str) -> str:
    texts = _texts(req)
    if len(texts) != 1:
        raise TranslationError(
            f"{model} embeds one input per request; send the {len(texts)} inputs as separate requests",
            "input",
        )
    return texts[0]


def _dimensions(req: Json) -> int | None:
    value = req.get("dimensions")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TranslationError("'dimensions' must be a positive integer", "dimensions")
    return value


def _require_native_size(dims: int | None, native: int, model: str) -> None:
    if dims is not None and dims != native:
        raise TranslationError(
            f"{model} does not support 'dimensions' (its vectors have {native})", "dimensions"
        )


def _check_encoding(req: Json) -> None:
    fmt = req.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise TranslationError("'encoding_format' must be 'float' or 'base64'", "encoding_format")


def _optional_str(req: Json, key: str) -> str | None:
    value = req.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TranslationError(f"'{key}' must be a string", key)


def _optional_bool(req: Json, key: str) -> bool | None:
    value = req.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise TranslationError(f"'{key}' must be a boolean", key)
