"""Fixture replay (``x-mock-fixture``): recorded provider answers served from the fixture dir."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from aiohttp import web

from extproc.mock.context import CT_EVENTSTREAM, CT_JSON, CT_SSE, Ctx, MockState
from extproc.mock.send import send_body, send_chunked, send_error, split

_FIXTURE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _fixture_content_type(path: Path, data: bytes) -> str:
    if path.suffix == ".bin":
        return CT_EVENTSTREAM
    if data.lstrip()[:6].startswith((b"event:", b"data:")):
        return CT_SSE
    return CT_JSON


def load_fixture(state: MockState, spec: str, streaming: bool = False) -> tuple[bytes, str] | None:
    """Read ``<provider>/<case>`` under the fixture dir; cached.

    An explicit ``.json``/``.bin`` suffix picks that file. Otherwise a case that exists in both forms
    (e.g. ``bedrock/basic``) resolves to ``.bin`` for streaming requests and ``.json`` for the rest.
    """
    key = f"{spec}|{streaming}"
    cached = state.fixtures.get(key)
    if cached is not None:
        return cached
    parts = spec.strip("/").split("/")
    if not all(_FIXTURE_PART.match(p) for p in parts):
        return None  # also rejects "..": no escaping the fixture dir
    base = state.fixture_dir.joinpath(*parts)
    suffixes = (".bin", ".json") if streaming else (".json", ".bin")
    candidates = (
        [base]
        if base.suffix in (".json", ".bin")
        else [*(base.with_name(base.name + s) for s in suffixes), base]
    )
    for candidate in candidates:
        if candidate.is_file():
            data = candidate.read_bytes()
            state.fixtures[key] = (data, _fixture_content_type(candidate, data))
            return state.fixtures[key]
    return None


_STREAM_ACTIONS = frozenset({"converse-stream", "streamGenerateContent", "streamRawPredict"})


def _is_streaming_request(ctx: Ctx) -> bool:
    if ctx.params.get("action") in _STREAM_ACTIONS:
        return True
    try:
        body = orjson.loads(ctx.body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("stream") is True


async def send_fixture(ctx: Ctx, spec: str) -> web.StreamResponse:
    found = load_fixture(ctx.state, spec, _is_streaming_request(ctx))
    if found is None:
        return await send_error(ctx, 404, f"mock fixture not found: {spec}")
    data, content_type = found
    if content_type == CT_JSON:
        return await send_body(ctx, data)
    size = ctx.controls.chunk_bytes
    return await send_chunked(ctx, split(data, size) if size else [data], content_type)
