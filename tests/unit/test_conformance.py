"""Our translators against the agentgateway conformance corpus (see shared/conformance/README.md).

Requests: ``requests/completions/<case>.json`` through ``chat_request`` must equal
the upstream request in ``<case>.<target>.snap``. Responses:
``response/<provider>/<case>.<from>-completions[-streaming].snap`` must match what
``chat_response`` / ``ChatStream`` make of the raw provider body, compared as
views (content, roles, tool calls with parsed arguments, finish reasons, usage).
Intended differences from the peer are normalisations below, each with its reason.
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from extproc.translate import anthropic, bedrock, gemini, openai
from extproc.translate.base import TranslationError

from .conformance_util import (
    completion_view,
    corpus,
    drop_nulls,
    every_byte,
    feed,
    frames,
    snap_json,
    snap_stream,
    stream_view,
    usage_view,
)

REQUEST_TARGETS: dict[str, ModuleType] = {"anthropic": anthropic, "bedrock": bedrock, "vertex-gemini": gemini}
RESPONSE_SOURCES: dict[str, ModuleType] = {
    "messages": anthropic,
    "bedrock": bedrock,
    "vertex-gemini": gemini,
    "completions": openai,
}
# The peer's snapshots use this as the model it called (Bedrock bodies name no model).
PEER_MODEL = "input-model"


_RESPONSE_SNAP = re.compile(
    r"^(?P<case>.+)\.(?P<src>messages|bedrock|vertex-gemini|completions)-completions(?P<stream>-streaming)?\.snap$"
)


def _request_cases() -> list[Any]:
    root = corpus() / "requests" / "completions"
    cases = []
    for snap in sorted(root.glob("*.snap")):
        case, _, target = snap.name[: -len(".snap")].partition(".")
        if target in REQUEST_TARGETS:
            cases.append(pytest.param(case, target, id=f"request/{case}.{target}"))
    assert cases, f"no request fixtures under {root}"
    return cases


def _response_cases() -> list[Any]:
    cases = []
    for src_dir in ("anthropic", "bedrock", "vertex-gemini", "completions"):
        for snap in sorted((corpus() / "response" / src_dir).glob("*.snap")):
            m = _RESPONSE_SNAP.match(snap.name)
            if m:
                streaming = bool(m["stream"])
                cases.append(
                    pytest.param(
                        src_dir, m["case"], m["src"], streaming, id=f"response/{src_dir}/{snap.name}"
                    )
                )
    assert cases, "no response fixtures found"
    return cases


# ---------------------------------------------------------------- requests


def _normalize_expected_request(target: str, expected: Any) -> Any:
    # The peer writes absent optional fields as null (e.g. Bedrock toolResult "status").
    expected = drop_nulls(expected)
    if target in ("anthropic", "bedrock"):
        # The peer sends consecutive tool results as separate user turns; we merge
        # consecutive same-role turns (Bedrock rejects repeats; Anthropic wants all
        # results of a parallel call in one turn).
        expected["messages"] = _merge_turns(expected["messages"])
    if target == "bedrock":
        config = expected.get("toolConfig")
        if config is not None:
            # Converse's field is "toolChoice"; the peer's snapshot has "tool_choice".
            if "tool_choice" in config:
                config["toolChoice"] = config.pop("tool_choice")
            # Same placeholder-tool idea as the peer, under our own name and description.
            if [t["toolSpec"]["name"] for t in config["tools"]] == ["agentgateway_dummy_do_not_call"]:
                config["tools"] = [bedrock.PLACEHOLDER_TOOL]
        _parse_bedrock_schema(expected)
    return expected


def _merge_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1]["content"] = merged[-1]["content"] + turn["content"]
        else:
            merged.append(dict(turn))
    return merged


def _parse_bedrock_schema(body: dict[str, Any]) -> None:
    """Bedrock takes the JSON schema as a string: compare it parsed, not byte for byte."""
    definition = (((body.get("outputConfig") or {}).get("textFormat") or {}).get("structure") or {}).get(
        "jsonSchema"
    )
    if definition and isinstance(definition.get("schema"), str):
        definition["schema"] = json.loads(definition["schema"])


@pytest.mark.parametrize(("case", "target"), _request_cases())
def test_request(case: str, target: str) -> None:
    root = corpus() / "requests" / "completions"
    req = json.loads((root / f"{case}.json").read_text())
    snapshot = snap_json(root / f"{case}.{target}.snap")
    expected = _normalize_expected_request(target, snapshot["request"])
    module = REQUEST_TARGETS[target]
    if target in ("anthropic", "bedrock") and req.get("n", 1) != 1:
        # The peer silently ignores n=3; we reject it (one choice only), which
        # test_translate_* checks. Compare the rest of the translation without it.
        del req["n"]
    refused = [k for k in req if k in module.REQUEST_FIELDS.unsupported]
    for key in refused:
        # The peer silently drops what the provider cannot express (seed, penalties,
        # logit_bias, the legacy functions); we answer a 400 naming the field. Check
        # that, then compare the rest of the translation without them.
        with pytest.raises(TranslationError) as exc:
            module.chat_request({k: v for k, v in req.items() if k not in refused or k == key}, "m")
        assert exc.value.param == key
    for key in refused:
        del req[key]
    original = copy.deepcopy(req)
    body = module.chat_request(req, snapshot["request"].get("model", req["model"]))
    assert req == original, "chat_request must not modify the client's request"
    if target == "bedrock":
        body = copy.deepcopy(body)
        _parse_bedrock_schema(body)
    assert body == expected


# ---------------------------------------------------------------- responses


def _normalize_expected_usage(src: str, usage: dict[str, int] | None) -> dict[str, int] | None:
    if usage is None or src not in ("messages", "bedrock"):
        return usage
    # Anthropic and Bedrock count input tokens without cache reads and writes; the
    # peer passes that through as prompt_tokens. OpenAI's prompt_tokens include
    # cached tokens (cached_tokens is a subset), so we add them back.
    usage = dict(usage)
    usage["prompt"] += usage["cached"] + usage["cache_write"]
    usage["total"] = usage["prompt"] + usage["completion"]
    return usage


def _provider_body(src_dir: str, case: str, streaming: bool) -> Path:
    base = corpus() / "response" / src_dir
    binary = base / f"{case}.bin"
    return binary if streaming and binary.exists() else base / f"{case}.json"


def _run_stream(module: ModuleType, data: bytes, cuts: list[int]) -> tuple[bytes, Any]:
    stream = module.ChatStream(PEER_MODEL, include_usage=True, created=123)
    return feed(stream, data, cuts), stream


@pytest.mark.parametrize(("src_dir", "case", "src", "streaming"), _response_cases())
def test_response(src_dir: str, case: str, src: str, streaming: bool) -> None:
    module = RESPONSE_SOURCES[src]
    suffix = "-streaming" if streaming else ""
    snap = corpus() / "response" / src_dir / f"{case}.{src}-completions{suffix}.snap"
    raw = _provider_body(src_dir, case, streaming).read_bytes()
    if streaming:
        _check_stream(module, src, raw, snap)
    else:
        _check_completion(module, src, raw, snap)


def _check_completion(module: ModuleType, src: str, raw: bytes, snap: Path) -> None:
    expected = completion_view(snap_json(snap)["response"])
    expected["usage"] = _normalize_expected_usage(src, expected["usage"])
    resp = module.chat_response(json.loads(raw), PEER_MODEL, created=1700000000)
    got = completion_view(resp)
    assert got == expected
    if src != "completions":
        assert resp["created"] == 1700000000
        assert resp["id"]


def _check_stream(module: ModuleType, src: str, raw: bytes, snap: Path) -> None:
    expected_text, _peer_usage = snap_stream(snap)
    expected = stream_view(expected_text)
    expected["usage"] = _normalize_expected_usage(src, expected["usage"])

    out, stream = _run_stream(module, raw, [])
    got = stream_view(out.decode())
    assert got == expected
    assert usage_view(stream.usage.openai() if stream.usage else None) == expected["usage"]
    # Bedrock's events name no model: the stream reports none rather than echo the request's.
    assert stream.response_model == (None if src == "bedrock" else expected["model"])
    if src == "completions":
        assert out == raw, "an OpenAI stream with include_usage passes through byte for byte"

    # Frames split at any byte must give the same output.
    whole = frames(out)
    one_byte = _run_stream(module, raw, every_byte(raw))[0]
    assert frames(one_byte) == whole
    rng = random.Random(snap.name)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 40))))
        assert frames(_run_stream(module, raw, cuts)[0]) == whole
