"""OpenAI embeddings <-> provider embeddings APIs (extproc.translate.embeddings), table-driven."""

from __future__ import annotations

import base64
import copy
import random
import struct
from typing import Any

import pytest

from extproc.translate import embeddings as emb
from extproc.translate.base import TranslationError

from .wrong_types import mutate

TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_V1 = "amazon.titan-embed-text-v1"
TITAN_IMAGE = "amazon.titan-embed-image-v1"
COHERE_V3 = "cohere.embed-english-v3"
COHERE_V4 = "cohere.embed-v4:0"
NOVA = "amazon.nova-2-multimodal-embeddings-v1:0"


def b64(*values: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


# ---------------------------------------------------------------- family and path

FAMILIES: list[tuple[str, str, str]] = [
    ("openai", "text-embedding-3-small", "openai"),
    ("azure", "my-embedding-deployment", "openai"),
    ("gemini", "gemini-embedding-001", "gemini"),
    ("vertex", "text-embedding-005", "vertex"),
    ("vertex", "multimodalembedding@001", "vertex"),
    ("bedrock", TITAN_V2, "bedrock-titan"),
    ("bedrock", TITAN_V1, "bedrock-titan"),
    ("bedrock", TITAN_IMAGE, "bedrock-titan"),
    ("bedrock", COHERE_V3, "bedrock-cohere"),
    ("bedrock", "us.cohere.embed-v4:0", "bedrock-cohere"),
    ("bedrock", "arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-multilingual-v3", "bedrock-cohere"),
    ("bedrock", NOVA, "bedrock-nova"),
]


@pytest.mark.parametrize(("kind", "model", "expected"), FAMILIES)
def test_family(kind: str, model: str, expected: str) -> None:
    assert emb.family(kind, model) == expected


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("anthropic", "claude-sonnet-4-5"),
        ("vertex", "claude-sonnet-4-5@20250929"),
        ("bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"),
        ("mistral", "mistral-embed"),
    ],
)
def test_family_without_embeddings(kind: str, model: str) -> None:
    with pytest.raises(TranslationError) as info:
        emb.family(kind, model)
    assert info.value.param == "model"
    with pytest.raises(TranslationError):
        emb.upstream_path(kind, model)
    with pytest.raises(TranslationError):
        emb.request(kind, {"input": "x"}, model)


@pytest.mark.parametrize(
    ("kind", "model", "path"),
    [
        ("openai", "text-embedding-3-small", None),
        ("azure", "deployment", None),
        ("vertex", "text-embedding-005", None),
        ("gemini", "gemini-embedding-001", "/v1beta/models/gemini-embedding-001:batchEmbedContents"),
        ("gemini", "models/text-embedding-004", "/v1beta/models/text-embedding-004:batchEmbedContents"),
        ("bedrock", TITAN_V2, "/model/amazon.titan-embed-text-v2%3A0/invoke"),
        ("bedrock", COHERE_V4, "/model/cohere.embed-v4%3A0/invoke"),
        ("bedrock", NOVA, "/model/amazon.nova-2-multimodal-embeddings-v1%3A0/invoke"),
    ],
)
def test_upstream_path(kind: str, model: str, path: str | None) -> None:
    assert emb.upstream_path(kind, model) == path


# ---------------------------------------------------------------- requests

# fmt: off
REQUESTS: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "openai passthrough keeps everything, sets the model",
        "openai",
        "text-embedding-3-large",
        {"model": "alias", "input": [[1, 2], [3]], "encoding_format": "base64", "user": "u1", "dimensions": 8},
        {"model": "text-embedding-3-large", "input": [[1, 2], [3]], "encoding_format": "base64", "user": "u1", "dimensions": 8},
    ),
    (
        "azure is the OpenAI body",
        "azure",
        "emb-deployment",
        {"model": "alias", "input": "hi"},
        {"model": "emb-deployment", "input": "hi"},
    ),
    (
        "gemini: one request per text, options on each",
        "gemini",
        "gemini-embedding-001",
        {"model": "m", "input": ["a", "b"], "dimensions": 256, "task_type": "RETRIEVAL_DOCUMENT", "title": "T", "user": "u", "encoding_format": "base64"},
        {
            "requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "taskType": "RETRIEVAL_DOCUMENT", "title": "T", "outputDimensionality": 256},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "taskType": "RETRIEVAL_DOCUMENT", "title": "T", "outputDimensionality": 256},
            ]
        },
    ),
    (
        "gemini: a models/ prefix is not doubled, no defaults added",
        "gemini",
        "models/text-embedding-004",
        {"input": "x"},
        {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}}]},
    ),
    (
        "vertex: RETRIEVAL_QUERY by default, no parameters",
        "vertex",
        "text-embedding-005",
        {"input": ["a", "b"]},
        {"instances": [{"content": "a", "task_type": "RETRIEVAL_QUERY"}, {"content": "b", "task_type": "RETRIEVAL_QUERY"}]},
    ),
    (
        "vertex: auto_truncate false and dimensions",
        "vertex",
        "gemini-embedding-001",
        {"input": "a", "auto_truncate": False, "dimensions": 768, "task_type": "SEMANTIC_SIMILARITY"},
        {"instances": [{"content": "a", "task_type": "SEMANTIC_SIMILARITY"}], "parameters": {"autoTruncate": False, "outputDimensionality": 768}},
    ),
    (
        "vertex multimodalembedding: text instances, 'dimension'",
        "vertex",
        "multimodalembedding@001",
        {"input": "a cat", "dimensions": 512},
        {"instances": [{"text": "a cat"}], "parameters": {"dimension": 512}},
    ),
    (
        "titan v2: dimensions and normalize; user dropped",
        "bedrock",
        TITAN_V2,
        {"input": "hello", "dimensions": 256, "normalize": False, "user": "u"},
        {"inputText": "hello", "dimensions": 256, "normalize": False},
    ),
    (
        "titan v2: a one-element array is one input",
        "bedrock",
        TITAN_V2,
        {"input": ["hello"]},
        {"inputText": "hello"},
    ),
    (
        "titan v1: inputText only; its native size is accepted and dropped",
        "bedrock",
        TITAN_V1,
        {"input": "hello", "dimensions": 1536},
        {"inputText": "hello"},
    ),
    (
        "titan image: text with embeddingConfig",
        "bedrock",
        TITAN_IMAGE,
        {"input": "hello", "dimensions": 384},
        {"inputText": "hello", "embeddingConfig": {"outputEmbeddingLength": 384}},
    ),
    (
        "cohere v3: task_type mapped, auto_truncate -> END, native size dropped",
        "bedrock",
        COHERE_V3,
        {"input": ["a", "b"], "task_type": "RETRIEVAL_DOCUMENT", "auto_truncate": True, "dimensions": 1024},
        {"texts": ["a", "b"], "input_type": "search_document", "truncate": "END"},
    ),
    (
        "cohere v4: native input_type, output_dimension, NONE",
        "bedrock",
        COHERE_V4,
        {"input": "a", "input_type": "clustering", "dimensions": 256, "auto_truncate": False},
        {"texts": ["a"], "input_type": "clustering", "output_dimension": 256, "truncate": "NONE"},
    ),
    (
        "cohere v4: auto_truncate -> RIGHT, Cohere's own task name accepted",
        "bedrock",
        COHERE_V4,
        {"input": "a", "task_type": "classification", "auto_truncate": True},
        {"texts": ["a"], "input_type": "classification", "truncate": "RIGHT"},
    ),
    (
        "nova: defaults (full size, GENERIC_INDEX, END)",
        "bedrock",
        NOVA,
        {"input": "hello"},
        {
            "schemaVersion": "nova-multimodal-embed-v1",
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": 3072, "text": {"truncationMode": "END", "value": "hello"}},
        },
    ),
    (
        "nova: task_type mapped, no truncation, dimensions",
        "bedrock",
        NOVA,
        {"input": "q", "task_type": "RETRIEVAL_QUERY", "auto_truncate": False, "dimensions": 256},
        {
            "schemaVersion": "nova-multimodal-embed-v1",
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_RETRIEVAL", "embeddingDimension": 256, "text": {"truncationMode": "NONE", "value": "q"}},
        },
    ),
    (
        "nova: Nova's own purpose accepted",
        "bedrock",
        NOVA,
        {"input": "q", "task_type": "TEXT_RETRIEVAL", "dimensions": 1024},
        {
            "schemaVersion": "nova-multimodal-embed-v1",
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {"embeddingPurpose": "TEXT_RETRIEVAL", "embeddingDimension": 1024, "text": {"truncationMode": "END", "value": "q"}},
        },
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("kind", "model", "req", "expected"), [pytest.param(*c[1:], id=c[0]) for c in REQUESTS]
)
def test_request(kind: str, model: str, req: dict[str, Any], expected: dict[str, Any]) -> None:
    original = copy.deepcopy(req)
    assert emb.request(kind, req, model) == expected
    assert req == original, "request() must not modify the client's request"


# fmt: off
ERRORS: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("token arrays need OpenAI's tokenizer", "gemini", "gemini-embedding-001", {"input": [[1, 2], [3]]}, "input"),
    ("one pre-tokenised input", "vertex", "text-embedding-005", {"input": [1, 2, 3]}, "input"),
    ("titan embeds one text", "bedrock", TITAN_V2, {"input": ["a", "b"]}, "input"),
    ("nova embeds one text", "bedrock", NOVA, {"input": ["a", "b"]}, "input"),
    ("empty array", "gemini", "gemini-embedding-001", {"input": []}, "input"),
    ("not text", "gemini", "gemini-embedding-001", {"input": 5}, "input"),
    ("missing input", "bedrock", COHERE_V3, {}, "input"),
    ("mixed array", "vertex", "text-embedding-005", {"input": ["a", 1]}, "input"),
    ("titan v1 has a fixed size", "bedrock", TITAN_V1, {"input": "a", "dimensions": 512}, "dimensions"),
    ("cohere v3 has a fixed size", "bedrock", COHERE_V3, {"input": "a", "dimensions": 512}, "dimensions"),
    ("cohere light is 384", "bedrock", "cohere.embed-english-light-v3", {"input": "a", "dimensions": 1024}, "dimensions"),
    ("dimensions zero", "gemini", "gemini-embedding-001", {"input": "a", "dimensions": 0}, "dimensions"),
    ("dimensions as text", "vertex", "text-embedding-005", {"input": "a", "dimensions": "256"}, "dimensions"),
    ("dimensions as bool", "bedrock", TITAN_V2, {"input": "a", "dimensions": True}, "dimensions"),
    ("encoding_format unknown", "gemini", "gemini-embedding-001", {"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ("task_type without a Cohere name", "bedrock", COHERE_V4, {"input": "a", "task_type": "SEMANTIC_SIMILARITY"}, "task_type"),
    ("task_type without a Nova name", "bedrock", NOVA, {"input": "a", "task_type": "FOO"}, "task_type"),
    ("task_type not a string", "vertex", "text-embedding-005", {"input": "a", "task_type": 5}, "task_type"),
    ("auto_truncate not a bool", "vertex", "text-embedding-005", {"input": "a", "auto_truncate": "yes"}, "auto_truncate"),
    ("normalize not a bool", "bedrock", TITAN_V2, {"input": "a", "normalize": 1}, "normalize"),
]
# fmt: on


@pytest.mark.parametrize(("kind", "model", "req", "param"), [pytest.param(*c[1:], id=c[0]) for c in ERRORS])
def test_request_errors(kind: str, model: str, req: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        emb.request(kind, req, model)
    assert info.value.param == param
    assert str(info.value)


# ---------------------------------------------------------------- responses

# fmt: off
RESPONSES: list[tuple[str, str, str, dict[str, Any], list[list[float]], int]] = [
    ("gemini batch", "gemini", "gemini-embedding-001", {"embeddings": [{"values": [1.0, -2.5]}, {"values": [0.5, 0.25]}]}, [[1.0, -2.5], [0.5, 0.25]], 0),
    ("gemini single embedContent", "gemini", "gemini-embedding-001", {"embedding": {"values": [1.0, -2.5]}}, [[1.0, -2.5]], 0),
    ("gemini usageMetadata, should it appear", "gemini", "gemini-embedding-001", {"embeddings": [{"values": [1.0]}], "usageMetadata": {"promptTokenCount": 7}}, [[1.0]], 7),
    (
        "vertex: token_count summed",
        "vertex",
        "text-embedding-005",
        {
            "predictions": [
                {"embeddings": {"values": [1.0, -2.5], "statistics": {"token_count": 3, "truncated": False}}},
                {"embeddings": {"values": [0.5, 0.25], "statistics": {"token_count": 4.0, "truncated": False}}},
            ],
            "metadata": {"billableCharacterCount": 10},
        },
        [[1.0, -2.5], [0.5, 0.25]],
        3,  # a float count is not a token count
    ),
    ("vertex multimodal textEmbedding", "vertex", "multimodalembedding@001", {"predictions": [{"textEmbedding": [1.0, -2.5]}]}, [[1.0, -2.5]], 0),
    ("titan v2", "bedrock", TITAN_V2, {"embedding": [1.0, -2.5], "inputTextTokenCount": 2, "embeddingsByType": {"float": [1.0, -2.5]}}, [[1.0, -2.5]], 2),
    ("titan: only embeddingsByType", "bedrock", TITAN_V2, {"inputTextTokenCount": 2, "embeddingsByType": {"float": [1.0, -2.5]}}, [[1.0, -2.5]], 2),
    ("cohere floats", "bedrock", COHERE_V3, {"id": "i", "embeddings": [[1.0, -2.5], [0.5, 0.25]], "response_type": "embeddings_floats", "texts": ["a", "b"]}, [[1.0, -2.5], [0.5, 0.25]], 0),
    (
        "cohere by type",
        "bedrock",
        COHERE_V4,
        {"id": "i", "embeddings": {"float": [[1.0, -2.5]], "int8": [[127, -128]]}, "response_type": "embeddings_by_type", "texts": ["a"]},
        [[1.0, -2.5]],
        0,
    ),
    ("nova", "bedrock", NOVA, {"embeddings": [{"embeddingType": "TEXT", "embedding": [1.0, -2.5]}]}, [[1.0, -2.5]], 0),
]
# fmt: on


@pytest.mark.parametrize(
    ("kind", "model", "resp", "vectors", "tokens"), [pytest.param(*c[1:], id=c[0]) for c in RESPONSES]
)
@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_response(
    kind: str, model: str, resp: dict[str, Any], vectors: list[list[float]], tokens: int, encoding: str | None
) -> None:
    req: dict[str, Any] = {"model": "client-alias", "input": "x"}
    if encoding:
        req["encoding_format"] = encoding
    original = copy.deepcopy(resp)
    out = emb.response(kind, resp, model, req)
    assert resp == original
    expected_data = [
        {"object": "embedding", "index": i, "embedding": b64(*v) if encoding == "base64" else v}
        for i, v in enumerate(vectors)
    ]
    assert out == {
        "object": "list",
        "data": expected_data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def test_base64_is_little_endian_float32() -> None:
    out = emb.response(
        "bedrock",
        {"embedding": [1.0, -2.5], "inputTextTokenCount": 1},
        TITAN_V2,
        {"encoding_format": "base64"},
    )
    assert out["data"][0]["embedding"] == "AACAPwAAIMA="
    assert base64.b64decode("AACAPwAAIMA=") == b"\x00\x00\x80?\x00\x00 \xc0"


# fmt: off
OPENAI_RESPONSES: list[tuple[str, dict[str, Any], str | None, dict[str, Any]]] = [
    (
        "complete body passes through",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}], "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}},
        None,
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}], "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}},
    ),
    (
        "missing index and object filled in",
        {"object": "list", "data": [{"embedding": [1.0]}, {"embedding": [2.0]}], "model": "gemini-embedding-001"},
        "float",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}, {"object": "embedding", "index": 1, "embedding": [2.0]}], "model": "gemini-embedding-001"},
    ),
    (
        "floats from a server that ignored base64 are encoded",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0, -2.5]}], "model": "m"},
        "base64",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AACAPwAAIMA="}], "model": "m"},
    ),
    (
        "base64 already encoded stays",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}], "model": "m"},
        "base64",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}], "model": "m"},
    ),
    ("no data list: untouched", {"error": "weird"}, "base64", {"error": "weird"}),
]
# fmt: on


@pytest.mark.parametrize(
    ("resp", "encoding", "expected"), [pytest.param(*c[1:], id=c[0]) for c in OPENAI_RESPONSES]
)
@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_openai_response(
    kind: str, resp: dict[str, Any], encoding: str | None, expected: dict[str, Any]
) -> None:
    original = copy.deepcopy(resp)
    req = {"input": "x"} if encoding is None else {"input": "x", "encoding_format": encoding}
    assert emb.response(kind, resp, "configured-model", req) == expected
    assert resp == original


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    ("kind", "model", "resp"), [pytest.param(c[1], c[2], c[3], id=c[0]) for c in RESPONSES]
)
def test_wrongly_typed_fields_never_raise(kind: str, model: str, resp: dict[str, Any]) -> None:
    rng = random.Random(model)
    for _ in range(200):
        for encoding in ("float", "base64"):
            out = emb.response(kind, mutate(resp, rng), model, {"encoding_format": encoding})
            assert out["object"] == "list"
            assert isinstance(out["usage"]["prompt_tokens"], int)
            for i, item in enumerate(out["data"]):
                assert item["index"] == i
                assert isinstance(item["embedding"], str if encoding == "base64" else list)
    for junk in ([], "x", None, 3):
        assert emb.response(kind, junk, model, {})["data"] == []  # type: ignore[arg-type]
