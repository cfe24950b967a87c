"""Embeddings translation against the agentgateway conformance corpus (see shared/conformance/README.md).

Requests: ``requests/embeddings/<case>.json`` through ``embeddings.request`` must equal the upstream
body in ``<case>.<target>.snap``. Responses: ``response/<target>/<case>.json`` through
``embeddings.response`` must match ``<case>.<target>.snap``, compared as views (object, model, usage,
index and vector of each item, vectors to float32 precision). Intended differences from the peer are
normalisations below, each with its reason.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
from typing import Any

import pytest

from extproc.translate import embeddings
from extproc.translate.base import TranslationError

from .conformance_util import corpus, drop_nulls, snap_json

# Each snapshot target: the provider kind, and the model we call (None: the one the peer's snapshot
# names). The peer's request snapshots were made with the client's model (text-embedding-3-small)
# forced onto each family; a family is chosen from the model here, so a model of that family stands in.
TARGETS: dict[str, tuple[str, str | None]] = {
    "openai": ("openai", None),
    "vertex": ("vertex", None),
    "bedrock-titan": ("bedrock", "amazon.titan-embed-text-v2:0"),
    "bedrock-cohere": ("bedrock", "cohere.embed-english-v3"),
    "bedrock-nova": ("bedrock", "amazon.nova-2-multimodal-embeddings-v1:0"),
}


# float32 keeps about 7 significant digits; the peer round-trips Cohere's vectors through f32.
F32 = 1e-6


def _request_cases() -> list[Any]:
    root = corpus() / "requests" / "embeddings"
    cases = []
    for snap in sorted(root.glob("*.snap")):
        case, _, target = snap.name[: -len(".snap")].partition(".")
        assert target in TARGETS, f"unknown embeddings target {target!r} in {snap.name}"
        cases.append(pytest.param(case, target, id=f"request/{case}.{target}"))
    assert cases, f"no request fixtures under {root}"
    return cases


def _response_cases() -> list[Any]:
    cases = []
    for target in TARGETS:
        for snap in sorted((corpus() / "response" / target).glob(f"*.{target}.snap")):
            case = snap.name[: -len(f".{target}.snap")]
            if "embeddings" in case:
                cases.append(pytest.param(target, case, id=f"response/{target}/{snap.name}"))
    assert len(cases) >= len(TARGETS), "an embeddings response fixture is missing"
    return cases


# ---------------------------------------------------------------- requests


def _model_for(target: str, req: dict[str, Any]) -> str:
    kind, stand_in = TARGETS[target]
    if stand_in is None:
        return req["model"]
    # A client model of the target's own family (cohere-v4.json) is used as is.
    try:
        if embeddings.family(kind, req["model"]) == target:
            return req["model"]
    except TranslationError:
        pass
    return stand_in


def _normalize_expected_request(target: str, expected: dict[str, Any]) -> dict[str, Any]:
    expected = drop_nulls(expected)
    if target == "bedrock-nova":
        # schemaVersion is optional and defaults to this value; we name it so the body keeps its
        # meaning should the default move (the peer leaves it out).
        expected = {"schemaVersion": "nova-multimodal-embed-v1", **expected}
    return expected


@pytest.mark.parametrize(("case", "target"), _request_cases())
def test_request(case: str, target: str) -> None:
    root = corpus() / "requests" / "embeddings"
    req = json.loads((root / f"{case}.json").read_text())
    expected = _normalize_expected_request(target, snap_json(root / f"{case}.{target}.snap")["request"])
    kind, _ = TARGETS[target]
    model = _model_for(target, req)
    assert embeddings.family(kind, model) == target
    original = copy.deepcopy(req)
    body = embeddings.request(kind, req, model)
    assert req == original, "request() must not modify the client's request"
    assert body == expected


@pytest.mark.parametrize("target", ["bedrock-titan", "bedrock-nova"])
def test_single_input_models_reject_arrays(target: str) -> None:
    # The peer has no array.<target>.snap for these: Titan and Nova embed one text per call, and
    # one client request is one upstream call, so several inputs are refused with a clear 400.
    req = json.loads((corpus() / "requests" / "embeddings" / "array.json").read_text())
    assert not (corpus() / "requests" / "embeddings" / f"array.{target}.snap").exists()
    kind, model = TARGETS[target]
    assert model is not None
    with pytest.raises(TranslationError) as info:
        embeddings.request(kind, req, model)
    assert info.value.param == "input"


# ---------------------------------------------------------------- responses


def _view(resp: dict[str, Any]) -> dict[str, Any]:
    data = [
        {
            "index": item["index"],
            "object": item.get("object"),
            "embedding": item["embedding"],
        }
        for item in resp["data"]
    ]
    usage = resp.get("usage")
    return {
        "object": resp.get("object"),
        "model": resp.get("model"),
        "data": data,
        "usage": None if usage is None else (usage.get("prompt_tokens"), usage.get("total_tokens")),
    }


def _expected_view(expected: dict[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(expected)
    for position, item in enumerate(expected["data"]):
        # Some OpenAI-compatible servers (Gemini's, in gemini-embeddings.json) leave out each item's
        # index; the peer passes that through, we fill in the item's position so strict clients
        # can read it.
        item.setdefault("index", position)
    view = _view(expected)
    for item in view["data"]:
        item["embedding"] = pytest.approx(item["embedding"], rel=F32, abs=F32)
    return view


@pytest.mark.parametrize(("target", "case"), _response_cases())
def test_response(target: str, case: str) -> None:
    base = corpus() / "response" / target
    raw = json.loads((base / f"{case}.json").read_text())
    snapshot = snap_json(base / f"{case}.{target}.snap")
    expected = snapshot["response"]
    kind, _ = TARGETS[target]
    model = expected["model"]  # the model the peer called
    original = copy.deepcopy(raw)
    resp = embeddings.response(kind, raw, model, {"model": model, "input": "x"})
    assert raw == original, "response() must not modify the provider's body"
    assert _view(resp) == _expected_view(expected)
    parsed = snapshot["parsed"]
    if "input_tokens" in parsed:
        assert resp["usage"]["prompt_tokens"] == parsed["input_tokens"]


@pytest.mark.parametrize(("target", "case"), _response_cases())
def test_response_base64(target: str, case: str) -> None:
    """encoding_format=base64: each vector as little-endian float32 bytes, as OpenAI sends them."""
    raw = json.loads((corpus() / "response" / target / f"{case}.json").read_text())
    kind, _ = TARGETS[target]
    model = raw.get("model") or TARGETS[target][1] or "text-embedding-004"
    floats = embeddings.response(kind, raw, model, {"input": "x"})
    packed = embeddings.response(kind, raw, model, {"input": "x", "encoding_format": "base64"})
    assert len(packed["data"]) == len(floats["data"])
    for as_float, as_b64 in zip(floats["data"], packed["data"], strict=True):
        assert isinstance(as_b64["embedding"], str)
        raw_bytes = base64.b64decode(as_b64["embedding"])
        decoded = struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes)
        assert decoded == pytest.approx(as_float["embedding"], rel=F32, abs=F32)
