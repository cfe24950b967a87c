"""Reading the agentgateway conformance corpus and comparing chat outputs semantically.

A snapshot is insta format: a YAML header between ``---`` lines, then the body.
Chat outputs (a ``chat.completion`` or an SSE stream of chunks) are reduced to a
view that keeps what must match (roles, content, reasoning, tool calls with parsed
arguments, finish reasons, usage) and drops ids, timestamps and key order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "agentgateway"


def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        raise FileNotFoundError(
            f"conformance corpus not found at {CORPUS}; clone the shared/ directory next to the repo"
        )
    return CORPUS


def corpus() -> Path:
    """The corpus, or a test failure (never a skip): a missing corpus must not pass quietly."""
    import pytest

    try:
        return corpus_dir()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def snap_body(path: Path) -> str:
    """The body of an insta snapshot: everything after the header's closing ``---``."""
    text = path.read_text()
    lines = text.split("\n")
    if lines[0] != "---":
        raise ValueError(f"{path}: not an insta snapshot")
    end = lines.index("---", 1)
    return "\n".join(lines[end + 1 :])


def snap_json(path: Path) -> Any:
    return json.loads(snap_body(path))


def snap_stream(path: Path) -> tuple[str, Any]:
    """A streaming snapshot: the SSE text and the usage JSON the peer appended after it."""
    body = snap_body(path)
    marker = "data: [DONE]"
    at = body.rindex(marker) + len(marker)
    return body[:at] + "\n\n", json.loads(body[at:])


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------- output views


def _args(raw: str) -> Any:
    """Tool arguments parsed when they are JSON (a truncated call keeps its raw text)."""
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return raw


def usage_view(usage: dict[str, Any] | None) -> dict[str, int] | None:
    if usage is None:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "prompt": usage.get("prompt_tokens", 0),
        "completion": usage.get("completion_tokens", 0),
        "total": usage.get("total_tokens", 0),
        "cached": prompt_details.get("cached_tokens") or 0,
        "cache_write": prompt_details.get("cache_write_tokens") or 0,
        "reasoning": completion_details.get("reasoning_tokens") or 0,
    }


def completion_view(resp: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for ch in resp.get("choices") or []:
        msg = ch.get("message") or {}
        calls = [
            {
                "id": tc.get("id"),
                "name": tc["function"]["name"],
                "arguments": _args(tc["function"].get("arguments") or ""),
            }
            for tc in msg.get("tool_calls") or []
        ]
        choices.append(
            {
                "index": ch.get("index", 0),
                "role": msg.get("role"),
                "content": msg.get("content") or "",  # null and "" both mean no text
                "reasoning": msg.get("reasoning_content") or "",
                "tool_calls": calls,
                "finish_reason": ch.get("finish_reason"),
            }
        )
    return {
        "object": resp.get("object"),
        "model": resp.get("model"),
        "choices": choices,
        "usage": usage_view(resp.get("usage")),
    }


def sse_events(text: str) -> list[str]:
    """The ``data`` payloads of an SSE text (LF framing, as we and the peer emit)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


def stream_view(text: str) -> dict[str, Any]:
    """Concatenates chunk deltas per choice, as an OpenAI client would."""
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    model = None
    errors = []
    done = False
    after_done = 0
    for data in sse_events(text):
        if done:
            after_done += 1
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            errors.append(chunk["error"])
            continue
        assert chunk.get("object") == "chat.completion.chunk", chunk
        model = chunk.get("model") or model
        usage = chunk.get("usage") or usage
        for ch in chunk.get("choices") or []:
            _merge_delta(choices, ch)
    views = []
    for index in sorted(choices):
        st = choices[index]
        calls = [
            {"id": t["id"], "name": t["name"], "arguments": _args(t["arguments"])}
            for _, t in sorted(st["tools"].items())
        ]
        views.append(
            {
                "index": index,
                "role": st["role"],
                "content": st["content"],
                "reasoning": st["reasoning"],
                "tool_calls": calls,
                "finish_reason": st["finish_reason"],
            }
        )
    return {
        "model": model,
        "choices": views,
        "usage": usage_view(usage),
        "errors": errors,
        "done": done,
        "events_after_done": after_done,
    }


def _merge_delta(choices: dict[int, dict[str, Any]], ch: dict[str, Any]) -> None:
    st = choices.setdefault(
        ch.get("index", 0),
        {"role": None, "content": "", "reasoning": "", "tools": {}, "finish_reason": None},
    )
    delta = ch.get("delta") or {}
    st["role"] = delta.get("role") or st["role"]
    st["content"] += delta.get("content") or ""
    st["reasoning"] += delta.get("reasoning_content") or ""
    for tc in delta.get("tool_calls") or []:
        tool = st["tools"].setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
        fn = tc.get("function") or {}
        tool["id"] = tc.get("id") or tool["id"]
        tool["name"] = fn.get("name") or tool["name"]
        tool["arguments"] += fn.get("arguments") or ""
    if ch.get("finish_reason"):
        assert st["finish_reason"] is None, "finish_reason sent twice"
        st["finish_reason"] = ch["finish_reason"]


# ---------------------------------------------------------------- feeding streams


def feed(stream: Any, data: bytes, cuts: list[int] | None = None) -> bytes:
    """Feeds ``data`` split at ``cuts`` (byte offsets), then finishes the stream."""
    out = bytearray()
    prev = 0
    for cut in [*(cuts or []), len(data)]:
        out += stream.feed(data[prev:cut])
        prev = cut
    out += stream.finish()
    assert stream.finish() == b"", "finish() must be idempotent"
    return bytes(out)


def every_byte(data: bytes) -> list[int]:
    return list(range(1, len(data)))


def frames(out: bytes) -> list[Any]:
    """Output frames parsed, with the generated response id removed."""
    result: list[Any] = []
    for data in sse_events(out.decode()):
        if data == "[DONE]":
            result.append(data)
            continue
        obj = json.loads(data)
        obj.pop("id", None)
        result.append(obj)
    return result
