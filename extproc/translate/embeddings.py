"""OpenAI ``POST /v1/embeddings`` <-> each provider's embeddings API.

Families, by provider kind and model:

- ``openai``: OpenAI, Azure OpenAI and OpenAI-compatible servers; the body passes through.
- ``gemini``: Gemini AI Studio ``models/{m}:batchEmbedContents``.
- ``vertex``: Vertex AI ``publishers/google/models/{m}:predict`` (text embedding models, and
  ``multimodalembedding`` with text input).
- ``bedrock-titan``, ``bedrock-cohere``, ``bedrock-nova``: Bedrock ``/model/{id}/invoke`` with the
  model's own body (Titan text/image embeddings, Cohere Embed v3/v4, Nova multimodal embeddings).

Besides the OpenAI fields (``input``, ``dimensions``, ``encoding_format``, ``user``) the request may
carry the extensions other gateways accept: ``task_type`` (Google's vocabulary, e.g.
``RETRIEVAL_DOCUMENT``; mapped for Cohere and Nova), ``title``, ``auto_truncate``, ``input_type``
(Cohere's own value) and ``normalize`` (Titan v2).

Providers answer with floats; ``encoding_format: "base64"`` is applied here, as OpenAI does it:
the little-endian float32 bytes of each vector, base64-encoded.

Pure: dicts in, dicts out. Response translation never raises (like the chat translators): a vector
of the wrong shape becomes an empty list rather than an exception in the response path.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from .base import Json, TranslationError
from .usage import usage_of

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


# ---------------------------------------------------------------- family and path


def family(kind: str, model: str) -> str:
    """Which embeddings API serves ``model`` on a provider of ``kind``."""
    if kind in ("openai", "azure"):
        return "openai"
    if kind == "gemini":
        return "gemini"
    if kind == "vertex":
        if model.startswith("claude"):
            raise TranslationError(f"the Anthropic model {model!r} on Vertex AI has no embeddings", "model")
        return "vertex"
    if kind == "bedrock":
        return _bedrock_family(model)
    raise TranslationError(f"provider kind {kind!r} has no embeddings API", "model")


def _bedrock_family(model: str) -> str:
    # Substrings, so that region prefixes ("us.") and foundation-model ARNs match too.
    m = model.lower()
    if "titan-embed" in m:
        return "bedrock-titan"
    if "cohere.embed" in m:
        return "bedrock-cohere"
    if "nova" in m and "embed" in m:
        return "bedrock-nova"
    raise TranslationError(
        f"the Bedrock model {model!r} is not an embeddings model the gateway knows "
        "(amazon.titan-embed-*, cohere.embed-*, amazon.nova-*-embeddings-*); "
        "an inference profile ARN must be replaced by the model id",
        "model",
    )


def upstream_path(kind: str, model: str) -> str | None:
    """The path for families whose path needs only the model; None where config values are needed."""
    fam = family(kind, model)
    if fam == "gemini":
        return f"/v1beta/models/{quote(_gemini_id(model), safe='')}:batchEmbedContents"
    if fam.startswith("bedrock-"):
        return f"/model/{quote(model, safe='')}/invoke"
    return None  # openai (base path), azure (deployment, api-version), vertex (project, region)


def _gemini_id(model: str) -> str:
    return model.removeprefix("models/")


# ---------------------------------------------------------------- request


def request(kind: str, req: Json, model: str) -> Json:
    """The client's OpenAI embeddings request as the provider's request body (``req`` is not modified)."""
    fam = family(kind, model)
    if fam == "openai":
        return {**req, "model": model}
    _check_encoding(req)
    return _REQUEST[fam](req, model)


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


# ---------------------------------------------------------------- response


def response(kind: str, resp: Json, model: str, req: Json) -> Json:
    """The provider's 200 body as an OpenAI embeddings list; ``req`` is the client's request."""
    as_base64 = req.get("encoding_format") == "base64"
    fam = family(kind, model)
    if fam == "openai":
        return _openai_response(resp, as_base64)
    if not isinstance(resp, dict):
        resp = {}
    # Token counts come from the usage readers; a provider that reports none gives 0 here
    # (Bedrock's Cohere and Nova bodies: the counts are in its response headers).
    found, _ = usage_of(fam + "-embeddings", resp)
    tokens = found.input_tokens if found else 0
    data = [_item(i, vec, as_base64) for i, vec in enumerate(_EXTRACT[fam](resp))]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


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
