"""The mock's provider-native embeddings endpoints: Gemini, Vertex AI and Bedrock InvokeModel.

Each handler checks the body the way the real API does (a body the real API rejects raises
:class:`Invalid` with a message in that API's style, which the server answers as a 400 in the
provider's error format) and returns the response bytes. Vectors come from
``formats.embedding_vector``: a function of the text and size only, so one text embeds identically on
every provider and in every batch position. Without an explicit size the mock answers
``formats.DEFAULT_EMBEDDING_DIMS`` floats (small on purpose), as its OpenAI endpoint does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from extproc.mock import formats
from extproc.mock.conversation import JSON

# Documented limits and enums of each API (see the module's tests for the sources' wording).
GEMINI_BATCH_LIMIT = 100
VERTEX_INSTANCE_LIMIT = 250
COHERE_TEXT_LIMIT = 96
COHERE_V3_TEXT_CHARS = 2048
MAX_DIMENSIONS = 3072

GOOGLE_TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
        "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY",
    }
)  # fmt: skip
VERTEX_MULTIMODAL_DIMENSIONS = (128, 256, 512, 1408)
TITAN_V2_DIMENSIONS = (256, 512, 1024)
TITAN_IMAGE_DIMENSIONS = (256, 384, 1024)
COHERE_V4_DIMENSIONS = (256, 512, 1024, 1536)
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
NOVA_SCHEMA = "nova-multimodal-embed-v1"
NOVA_DIMENSIONS = (256, 384, 1024, 3072)
NOVA_PURPOSES = (
    "GENERIC_INDEX", "GENERIC_RETRIEVAL", "TEXT_RETRIEVAL", "IMAGE_RETRIEVAL", "VIDEO_RETRIEVAL",
    "DOCUMENT_RETRIEVAL", "AUDIO_RETRIEVAL", "CLASSIFICATION", "CLUSTERING",
)  # fmt: skip
NOVA_MEDIA = ("text", "image", "audio", "video")


class Invalid(Exception):
    """The real API answers this body with a 400; the message is in that API's words."""


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    input_tokens: int | None = None  # Bedrock reports these in x-amzn-bedrock-input-token-count


def _get(obj: JSON, camel: str, snake: str) -> Any:
    """Google's JSON mapping accepts both lowerCamel and snake_case field names."""
    return obj.get(camel) if camel in obj else obj.get(snake)


def _vector(text: str, dims: int | None) -> list[float]:
    return formats.embedding_vector(text, dims or formats.DEFAULT_EMBEDDING_DIMS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- Gemini (AI Studio) -------------------------------------------------------------------------------


def _gemini_text(request: JSON, where: str) -> str:
    content = request.get("content")
    if not isinstance(content, dict):
        raise Invalid(f"* {where}.content: content is not specified")
    parts = content.get("parts")
    texts = [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if not isinstance(parts, list) or not texts:
        raise Invalid(f"* {where}.content.parts: contents must have at least one text part")
    return " ".join(texts)


def _gemini_options(request: JSON, where: str) -> int | None:
    task = _get(request, "taskType", "task_type")
    if task is not None and task not in GOOGLE_TASK_TYPES:
        raise Invalid(f"Invalid value at '{where}.task_type', \"{task}\"")
    dims = _get(request, "outputDimensionality", "output_dimensionality")
    if dims is not None and not (_is_int(dims) and 0 < dims <= MAX_DIMENSIONS):
        raise Invalid(f"* {where}.output_dimensionality: must be between 1 and {MAX_DIMENSIONS}")
    return dims


def gemini_embed_content(body: JSON, model: str) -> Answer:
    text = _gemini_text(body, "EmbedContentRequest")
    dims = _gemini_options(body, "EmbedContentRequest")
    return Answer(formats.gemini_embedding(_vector(text, dims)))


def gemini_batch_embed(body: JSON, model: str) -> Answer:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise Invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
    if len(requests) > GEMINI_BATCH_LIMIT:
        raise Invalid(
            f"* BatchEmbedContentsRequest.requests: at most {GEMINI_BATCH_LIMIT} requests can be in one batch"
        )
    vectors = []
    for i, request in enumerate(requests):
        where = f"BatchEmbedContentsRequest.requests[{i}]"
        if not isinstance(request, dict):
            raise Invalid(f"* {where}: must be an object")
        # Each request names its model, and it must be the model of the URL.
        if request.get("model") != f"models/{model}":
            raise Invalid(f"* {where}.model: must be 'models/{model}', the model in the URL")
        vectors.append(_vector(_gemini_text(request, where), _gemini_options(request, where)))
    return Answer(formats.gemini_embeddings(vectors))


# --- Vertex AI predict --------------------------------------------------------------------------------


def vertex_predict(body: JSON, model: str) -> Answer:
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise Invalid("Invalid request: 'instances' must be a non-empty list.")
    if len(instances) > VERTEX_INSTANCE_LIMIT:
        raise Invalid("Unable to submit request because it included too many instances.")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise Invalid("Invalid request: 'parameters' must be an object.")
    if "multimodalembedding" in model:
        return _vertex_multimodal(instances, parameters)
    texts = [_vertex_instance(instance, i) for i, instance in enumerate(instances)]
    dims = _get(parameters, "outputDimensionality", "output_dimensionality")
    if dims is not None and not (_is_int(dims) and 0 < dims <= MAX_DIMENSIONS):
        raise Invalid(f"Invalid outputDimensionality: {dims}; must be between 1 and {MAX_DIMENSIONS}.")
    truncate = _get(parameters, "autoTruncate", "auto_truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise Invalid("Invalid autoTruncate: must be a boolean.")
    return Answer(formats.vertex_text_embeddings(texts, [_vector(t, dims) for t in texts]))


def _vertex_instance(instance: Any, index: int) -> str:
    if not isinstance(instance, dict) or not isinstance(instance.get("content"), str):
        raise Invalid(f"Invalid instance {index}: 'content' is required and must be a string.")
    task = _get(instance, "task_type", "taskType")
    if task is not None and task not in GOOGLE_TASK_TYPES:
        raise Invalid(f"Invalid instance {index}: unsupported task_type '{task}'.")
    return instance["content"]


def _vertex_multimodal(instances: list[Any], parameters: JSON) -> Answer:
    dims = parameters.get("dimension")
    if dims is not None and dims not in VERTEX_MULTIMODAL_DIMENSIONS:
        raise Invalid(f"Invalid dimension: {dims}; must be one of {list(VERTEX_MULTIMODAL_DIMENSIONS)}.")
    texts = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("text"), str):
            raise Invalid(f"Invalid instance {i}: the mock embeds text instances ('text').")
        texts.append(instance["text"])
    return Answer(formats.vertex_multimodal_embeddings([_vector(t, dims) for t in texts]))


# --- Bedrock InvokeModel ------------------------------------------------------------------------------


def _malformed(detail: str) -> Invalid:
    # Bedrock's wording for a body that fails the model's JSON schema.
    return Invalid(f"Malformed input request: {detail}, please reformat your input and try again.")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "BigDecimal"
    return {str: "String", list: "JSONArray", dict: "JSONObject"}.get(type(value), "Null")


def _only_keys(body: JSON, allowed: tuple[str, ...], where: str = "#") -> None:
    for key in body:
        if key not in allowed:
            raise _malformed(f"{where}: extraneous key [{key}] is not permitted")


def _require(body: JSON, key: str, kind: type, where: str = "#") -> Any:
    if key not in body:
        raise _malformed(f"{where}: required key [{key}] not found")
    return _typed(body, key, kind, where)


def _typed(body: JSON, key: str, kind: type, where: str = "#") -> Any:
    value = body.get(key)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if key in body and not ok:
        raise _malformed(f"{where}/{key}: expected type: {_json_type(kind())}, found: {_json_type(value)}")
    return value


def _enum(body: JSON, key: str, allowed: tuple[Any, ...], where: str = "#") -> Any:
    value = body.get(key)
    if key in body and value not in allowed:
        raise _malformed(f"{where}/{key}: {orjson.dumps(value).decode()} is not a valid enum value")
    return value


def bedrock_family(model: str) -> str | None:
    m = model.lower()
    if "titan-embed" in m:
        return "titan"
    if "cohere.embed" in m:
        return "cohere"
    if "nova" in m and "embed" in m:
        return "nova"
    return None


def bedrock_invoke(body: JSON, model: str, request_id: str) -> Answer:
    family = bedrock_family(model)
    if family == "titan":
        return _titan(body, model.lower())
    if family == "cohere":
        return _cohere(body, "embed-v4" in model.lower(), request_id)
    if family == "nova":
        return _nova(body)
    raise Invalid(f"mock: InvokeModel is implemented for embedding models only, not {model}.")


def _titan(body: JSON, model: str) -> Answer:
    if "embed-image" in model:
        _only_keys(body, ("inputText", "inputImage", "embeddingConfig"))
        text = _typed(body, "inputText", str)
        image = _typed(body, "inputImage", str)
        if text is None and image is None:
            raise _malformed("#: at least one of [inputText, inputImage] is required")
        config = _typed(body, "embeddingConfig", dict) or {}
        dims = _enum(config, "outputEmbeddingLength", TITAN_IMAGE_DIMENSIONS, "#/embeddingConfig")
        subject = (text or "") + (image or "")
        return Answer(formats.titan_embedding(text or "", _vector(subject, dims), None), _tokens(text))
    if "text-v1" in model or "g1-text" in model:
        _only_keys(body, ("inputText",))
        text = _require(body, "inputText", str)
        return Answer(formats.titan_embedding(text, _vector(text, None), None), _tokens(text))
    _only_keys(body, ("inputText", "dimensions", "normalize", "embeddingTypes"))
    text = _require(body, "inputText", str)
    dims = _enum(body, "dimensions", TITAN_V2_DIMENSIONS)
    _typed(body, "normalize", bool)
    types = _typed(body, "embeddingTypes", list) or ["float"]
    if not all(t in ("float", "binary") for t in types):
        raise _malformed(f"#/embeddingTypes: {orjson.dumps(types).decode()} is not a valid enum value")
    return Answer(formats.titan_embedding(text, _vector(text, dims), types), _tokens(text))


def _tokens(text: str | None) -> int:
    return formats.embedding_tokens([text]) if text else 0


_COHERE_V3_KEYS = ("texts", "images", "input_type", "truncate", "embedding_types")
_COHERE_V4_KEYS = (*_COHERE_V3_KEYS, "inputs", "output_dimension", "max_tokens")


def _cohere(body: JSON, v4: bool, request_id: str) -> Answer:
    _only_keys(body, _COHERE_V4_KEYS if v4 else _COHERE_V3_KEYS)
    input_types = ("search_document", "search_query", "classification", "clustering")
    _require(body, "input_type", str)
    _enum(body, "input_type", input_types if v4 else (*input_types, "image"))
    _enum(body, "truncate", ("NONE", "LEFT", "RIGHT") if v4 else ("NONE", "START", "END"))
    types = _typed(body, "embedding_types", list)
    if types is not None and (not types or not all(t in COHERE_TYPES for t in types)):
        raise _malformed(f"#/embedding_types: {orjson.dumps(types).decode()} is not a valid enum value")
    dims = _enum(body, "output_dimension", COHERE_V4_DIMENSIONS) if v4 else None
    if v4:
        _typed(body, "max_tokens", int)
    texts = _cohere_inputs(body, v4)
    vectors = [_vector(t, dims) for t in texts]
    return Answer(formats.cohere_embeddings(request_id, texts, vectors, types))


def _cohere_inputs(body: JSON, v4: bool) -> list[str]:
    given = [k for k in ("texts", "images", "inputs") if k in body]
    if len(given) != 1:
        raise _malformed("#: exactly one of [texts, images] (v4: or inputs) is required")
    items = _typed(body, given[0], list)
    if not items:
        raise _malformed(f"#/{given[0]}: expected minimum item count: 1, found: 0")
    limit = 1 if given[0] == "images" and not v4 else COHERE_TEXT_LIMIT
    if len(items) > limit:
        raise _malformed(f"#/{given[0]}: expected maximum item count: {limit}, found: {len(items)}")
    if given[0] != "texts":
        return [orjson.dumps(item).decode() for item in items]  # images/inputs: embed their JSON
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise _malformed(f"#/texts/{i}: expected type: String, found: {_json_type(text)}")
        if not v4 and len(text) > COHERE_V3_TEXT_CHARS:
            raise _malformed(f"#/texts/{i}: expected maxLength: {COHERE_V3_TEXT_CHARS}, actual: {len(text)}")
    return items


def _nova(body: JSON) -> Answer:
    _only_keys(body, ("schemaVersion", "taskType", "singleEmbeddingParams"))
    _enum(body, "schemaVersion", (NOVA_SCHEMA,))
    # Segmented embeddings exist only on the asynchronous API (StartAsyncInvoke).
    _require(body, "taskType", str)
    _enum(body, "taskType", ("SINGLE_EMBEDDING",))
    params = _require(body, "singleEmbeddingParams", dict)
    where = "#/singleEmbeddingParams"
    _only_keys(params, ("embeddingPurpose", "embeddingDimension", *NOVA_MEDIA), where)
    _require(params, "embeddingPurpose", str, where)
    _enum(params, "embeddingPurpose", NOVA_PURPOSES, where)
    dims = _enum(params, "embeddingDimension", NOVA_DIMENSIONS, where) or 3072
    media = [m for m in NOVA_MEDIA if m in params]
    if len(media) != 1:
        raise _malformed(f"{where}: exactly one of [text, image, audio, video] is required")
    if media[0] != "text":
        source = _require(params, media[0], dict, where)
        return Answer(formats.nova_embeddings(media[0].upper(), _vector(orjson.dumps(source).decode(), dims)))
    text = _nova_text(_require(params, "text", dict, where), f"{where}/text")
    return Answer(formats.nova_embeddings("TEXT", _vector(text, dims)), _tokens(text))


def _nova_text(text: JSON, where: str) -> str:
    _only_keys(text, ("truncationMode", "value", "source"), where)
    _require(text, "truncationMode", str, where)
    _enum(text, "truncationMode", ("START", "END", "NONE"), where)
    if ("value" in text) == ("source" in text):
        raise _malformed(f"{where}: exactly one of [value, source] is required")
    if "source" in text:
        return orjson.dumps(_typed(text, "source", dict, where)).decode()
    return _typed(text, "value", str, where)
