"""Our Messages-client translators against the agentgateway conformance corpus.

The client speaks Anthropic Messages (see shared/conformance/README.md):

- Requests: ``requests/messages/<case>.json`` through ``codec(kind).request`` must equal
  the upstream body in ``<case>.<target>.snap`` (completions = OpenAI, bedrock,
  vertex = Claude on Vertex, anthropic = native).
- Responses: ``response/<provider>/<case>.<src>-messages[-streaming].snap`` must match
  what ``codec(kind).response`` / ``codec(kind).stream`` make of the raw provider body,
  compared as views (content blocks, tool inputs, stop reason, usage), streams also
  fed split at every byte and at random cuts.

Intended differences from the peer are normalisations below, each with its reason.
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from extproc.translate import bedrock
from extproc.translate.base import TranslationError
from extproc.translate.messages import codec

from .conformance_util import corpus, drop_nulls, every_byte, feed, snap_body, snap_json

# Snapshot target -> (provider kind, model for codec()). The peer's "vertex" target is
# Claude on Vertex (rawPredict) whatever the model is called; our codec picks Vertex
# Claude by a claude* model name, so the test asks for it with one.
REQUEST_TARGETS: dict[str, tuple[str, str | None]] = {
    "completions": ("openai", None),
    "bedrock": ("bedrock", None),
    "vertex": ("vertex", "claude-sonnet-4"),
    "anthropic": ("anthropic", None),
}
# Response snapshot source -> provider kind.
RESPONSE_SOURCES: dict[str, str] = {"completions": "openai", "bedrock": "bedrock", "messages": "anthropic"}
# The peer's snapshots use this as the model it called (Bedrock bodies name no model).
PEER_MODEL = "input-model"

# Fixtures that target the OpenAI Responses API are not collected: it is not a client or
# provider format of this gateway (test_conformance_coverage.py lists them with that reason).
_RESPONSE_SNAP = re.compile(r"^(?P<case>.+)\.(?P<src>[a-z-]+?)-messages(?P<stream>-streaming)?\.snap$")


def _request_cases() -> list[Any]:
    root = corpus() / "requests" / "messages"
    cases = []
    for snap in sorted(root.glob("*.snap")):
        case, _, target = snap.name[: -len(".snap")].partition(".")
        if target in REQUEST_TARGETS:
            cases.append(pytest.param(case, target, id=f"request/{case}.{target}"))
    assert cases, f"no request fixtures under {root}"
    return cases


def _response_cases() -> list[Any]:
    cases = []
    for snap in sorted((corpus() / "response").glob("*/*-messages*.snap")):
        m = _RESPONSE_SNAP.match(snap.name)
        assert m, f"unexpected snapshot name {snap.name}"
        if m["src"] not in RESPONSE_SOURCES:
            continue
        fixture_id = f"response/{snap.parent.name}/{snap.name}"
        cases.append(pytest.param(snap.parent.name, m["case"], m["src"], bool(m["stream"]), id=fixture_id))
    assert cases, "no response fixtures found"
    return cases


# ---------------------------------------------------------------- requests


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
    structure = ((body.get("outputConfig") or {}).get("textFormat") or {}).get("structure") or {}
    definition = structure.get("jsonSchema")
    if definition and isinstance(definition.get("schema"), str):
        definition["schema"] = json.loads(definition["schema"])


def _moved_tool_images(req: dict[str, Any], expected: dict[str, Any]) -> None:
    """The peer drops images inside tool results (chat tool messages carry text only); we
    keep them in a user message right after the tool messages, so Claude Code's image
    reads reach the model. Expect that message."""
    for msg in req["messages"]:
        content = msg["content"] if msg["role"] == "user" and isinstance(msg["content"], list) else []
        results = [b for b in content if b.get("type") == "tool_result"]
        images = [
            {
                "type": "image_url",
                "image_url": {"url": f"data:{i['source']['media_type']};base64,{i['source']['data']}"},
            }
            for r in results
            if isinstance(r.get("content"), list)
            for i in r["content"]
            if i.get("type") == "image"
        ]
        if not images:
            continue
        assert len(results) == len(content), "only turns made of tool results are normalised here"
        ids = {r["tool_use_id"] for r in results}
        last = max(i for i, m in enumerate(expected["messages"]) if m.get("tool_call_id") in ids)
        expected["messages"].insert(last + 1, {"role": "user", "content": images})


def _normalize_expected_request(target: str, req: dict[str, Any], expected: Any) -> Any:
    # The peer writes absent optional fields as null (Bedrock toolResult "status", toolSpec "description").
    expected = drop_nulls(expected)
    if target == "bedrock":
        # The peer sends consecutive same-role turns; Bedrock rejects them, we merge them.
        expected["messages"] = _merge_turns(expected["messages"])
        config = expected.get("toolConfig")
        # Same placeholder-tool idea as the peer, under our own name and description.
        if config and [t["toolSpec"]["name"] for t in config["tools"]] == ["agentgateway_dummy_do_not_call"]:
            config["tools"] = [bedrock.PLACEHOLDER_TOOL]
        _parse_bedrock_schema(expected)
    if target == "completions":
        _moved_tool_images(req, expected)
    return expected


@pytest.mark.parametrize(("case", "target"), _request_cases())
def test_request(case: str, target: str) -> None:
    root = corpus() / "requests" / "messages"
    req = json.loads((root / f"{case}.json").read_text())
    snapshot = snap_json(root / f"{case}.{target}.snap")
    kind, codec_model = REQUEST_TARGETS[target]
    expected = _normalize_expected_request(target, req, snapshot["request"])
    translator = codec(kind, codec_model or req["model"])
    if target == "completions" and "top_k" in req:
        # The peer silently drops top_k for OpenAI, which has no top-k sampling; we answer
        # a 400 naming it. Check that, then compare the rest of the translation without it.
        with pytest.raises(TranslationError) as exc:
            translator.request(req, req["model"])
        assert exc.value.param == "top_k"
        req = {k: v for k, v in req.items() if k != "top_k"}
    original = copy.deepcopy(req)
    body = translator.request(req, req["model"])
    assert req == original, "request() must not modify the client's request"
    if target == "bedrock":
        body = copy.deepcopy(body)
        _parse_bedrock_schema(body)
    assert body == expected


@pytest.mark.parametrize("kind", ["openai", "azure", "anthropic", "gemini", "vertex", "bedrock"])
def test_every_request_fixture_translates(kind: str) -> None:
    """Inputs without a snapshot for some target (tool_result_error, ...) still translate:
    a body, never an exception other than a TranslationError naming a parameter."""
    for path in sorted((corpus() / "requests" / "messages").glob("*.json")):
        req = json.loads(path.read_text())
        try:
            body = codec(kind, req["model"]).request(req, req["model"])
        except TranslationError as exc:
            assert exc.param, path.name
            continue
        json.dumps(body)


# ---------------------------------------------------------------- views


def usage_view(usage: dict[str, Any] | None) -> dict[str, int] | None:
    """Token counts; a count the peer leaves out is zero (Anthropic always sends the cache fields)."""
    if usage is None:
        return None
    return {
        "input": usage.get("input_tokens") or 0,
        "output": usage.get("output_tokens") or 0,
        "cache_read": usage.get("cache_read_input_tokens") or 0,
        "cache_write": usage.get("cache_creation_input_tokens") or 0,
    }


def message_view(msg: dict[str, Any]) -> dict[str, Any]:
    """What must match: blocks (with parsed tool inputs), stop reason and sequence, tokens."""
    return {
        "type": msg.get("type"),
        "role": msg.get("role"),
        "model": msg.get("model"),
        "content": [drop_nulls(b) for b in msg.get("content") or []],
        "stop_reason": msg.get("stop_reason"),
        "stop_sequence": msg.get("stop_sequence"),
        "usage": usage_view(msg.get("usage")),
    }


def sse_events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """``(event name, parsed data)`` of an SSE text; ``event:`` with or without the space."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            out.append((name, json.loads("\n".join(data))))
    return out


def _tool_input(block: dict[str, Any], partial: str) -> Any:
    if not partial:
        return block.get("input", {})
    try:
        return json.loads(partial)
    except json.JSONDecodeError:
        return partial


def stream_view(text: str, strict: bool) -> dict[str, Any]:
    """Rebuilds the message as an Anthropic SDK would (message_delta usage merged over
    message_start's). ``strict`` also checks the stream is well formed, as our output must be:
    names match types, message_start first, blocks opened in index order and each closed
    before the next, nothing after message_stop or error."""
    message: dict[str, Any] | None = None
    partial: dict[int, str] = {}
    open_blocks: set[int] = set()
    errors: list[Any] = []
    ended = False
    after_end = 0
    for name, data in sse_events(text):
        kind = data.get("type")
        if ended:
            after_end += 1
        if strict:
            assert name == kind, (name, kind)
            assert message is not None or kind in ("message_start", "error"), "message_start must come first"
        if kind == "message_start":
            assert message is None, "message_start sent twice"
            message = copy.deepcopy(data["message"])
            message["usage"] = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            assert message is not None
            index = data["index"]
            if strict:
                assert index == len(message["content"]) and not open_blocks, "blocks must open in order"
            message["content"].append(copy.deepcopy(data["content_block"]))
            partial[index] = ""
            open_blocks.add(index)
        elif kind == "content_block_delta":
            assert message is not None
            index = data["index"]
            if strict:
                assert index in open_blocks, "delta outside an open block"
            _apply_delta(message["content"][index], data["delta"], partial, index)
        elif kind == "content_block_stop":
            if strict:
                assert data["index"] in open_blocks, "stop of a block that is not open"
            open_blocks.discard(data["index"])
        elif kind == "message_delta":
            assert message is not None
            message.update({k: v for k, v in data["delta"].items()})
            message["usage"].update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            if strict:
                assert not open_blocks, "message_stop with a block still open"
            ended = True
        elif kind == "error":
            errors.append(data["error"])
            ended = True
    if message is not None:
        for index, block in enumerate(message["content"]):
            if block.get("type") == "tool_use":
                block["input"] = _tool_input(block, partial.get(index, ""))
    return {
        "message": message_view(message) if message is not None else None,
        "errors": errors,
        "ended": ended,
        "events_after_end": after_end,
    }


def _apply_delta(block: dict[str, Any], delta: dict[str, Any], partial: dict[int, str], index: int) -> None:
    kind = delta["type"]
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta["text"]
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta["thinking"]
    elif kind == "signature_delta":
        block["signature"] = block.get("signature", "") + delta["signature"]
    elif kind == "input_json_delta":
        partial[index] += delta["partial_json"]
    elif kind == "citations_delta":
        block.setdefault("citations", []).append(delta["citation"])
    else:
        raise AssertionError(f"unknown delta {kind}")


def frames(out: bytes) -> list[Any]:
    """Output events parsed, with generated message ids removed."""
    result = []
    for name, data in sse_events(out.decode()):
        if data.get("type") == "message_start":
            data["message"].pop("id", None)
        result.append((name, data))
    return result


# ---------------------------------------------------------------- responses


def _provider_body(src_dir: str, case: str, streaming: bool) -> Path:
    base = corpus() / "response" / src_dir
    binary = base / f"{case}.bin"
    return binary if streaming and binary.exists() else base / f"{case}.json"


def _split_thinking(src: str, raw: dict[str, Any], view: dict[str, Any]) -> None:
    """The peer drops reasoning text from OpenAI-compatible answers; we keep it as an
    (unsigned) thinking block so clients can show it. Check it is the provider's reasoning,
    then compare the rest."""
    if src != "completions":
        return
    thinking = [b for b in view["content"] if b["type"] == "thinking"]
    view["content"] = [b for b in view["content"] if b["type"] != "thinking"]
    msg = raw["choices"][0]["message"]
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    assert [b["thinking"] for b in thinking] == ([reasoning] if reasoning else [])


@pytest.mark.parametrize(("src_dir", "case", "src", "streaming"), _response_cases())
def test_response(src_dir: str, case: str, src: str, streaming: bool) -> None:
    suffix = "-streaming" if streaming else ""
    snap = corpus() / "response" / src_dir / f"{case}.{src}-messages{suffix}.snap"
    raw = _provider_body(src_dir, case, streaming).read_bytes()
    kind = RESPONSE_SOURCES[src]
    if streaming:
        _check_stream(kind, raw, snap)
    else:
        _check_message(kind, src, raw, snap)


def _check_message(kind: str, src: str, raw: bytes, snap: Path) -> None:
    expected = message_view(snap_json(snap)["response"])
    parsed = json.loads(raw)
    resp = codec(kind, PEER_MODEL).response(copy.deepcopy(parsed), PEER_MODEL, created=1700000000)
    got = message_view(resp)
    _split_thinking(src, parsed, got)
    assert got == expected
    assert resp["id"]
    if kind == "anthropic":
        assert resp == parsed, "a native answer passes through untouched"


def _snap_stream_text(snap: Path) -> str:
    """The SSE part of a streaming snapshot (the peer appends its usage JSON after it)."""
    body = snap_body(snap)
    return body[: body.rindex("\n\n\n")]


def _run_stream(kind: str, data: bytes, cuts: list[int]) -> tuple[bytes, Any]:
    stream = codec(kind, PEER_MODEL).stream(PEER_MODEL, created=123)
    return feed(stream, data, cuts), stream


def _check_stream(kind: str, raw: bytes, snap: Path) -> None:
    expected = stream_view(_snap_stream_text(snap), strict=False)
    out, stream = _run_stream(kind, raw, [])
    got = stream_view(out.decode(), strict=True)
    assert got == expected
    assert got["ended"] and not got["errors"] and got["events_after_end"] == 0
    assert got["message"] is not None
    assert usage_view(stream.usage.anthropic() if stream.usage else None) == got["message"]["usage"]
    # Bedrock's events name no model: the stream reports none rather than echo the request's.
    assert stream.response_model == (None if kind == "bedrock" else got["message"]["model"])
    if kind == "anthropic":
        # Native streams pass through event by event (re-framed: comments dropped).
        assert [d for _, d in sse_events(out.decode())] == [d for _, d in sse_events(raw.decode())]

    # Frames split at any byte must give the same output.
    whole = frames(out)
    assert frames(_run_stream(kind, raw, every_byte(raw))[0]) == whole
    rng = random.Random(snap.name)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 40))))
        assert frames(_run_stream(kind, raw, cuts)[0]) == whole
