"""Writing answers: whole bodies, event streams and provider-shaped errors, honouring the chunking,
pacing, gzip and mid-stream-failure controls."""

from __future__ import annotations

import asyncio
import gzip
import zlib

from aiohttp import web

from extproc.mock import formats
from extproc.mock.context import CT_EVENTSTREAM, CT_JSON, Ctx


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


async def _write_pieces(ctx: Ctx, resp: web.StreamResponse, pieces: list[bytes]) -> None:
    delay = ctx.controls.chunk_delay_ms / 1000
    chunked = ctx.controls.chunk_bytes > 0
    for piece in pieces:
        await resp.write(piece)
        if delay:
            await asyncio.sleep(delay)
        elif chunked:
            await asyncio.sleep(0)  # let each piece reach the socket as its own write


async def send_body(
    ctx: Ctx,
    body: bytes,
    status: int = 200,
    content_type: str = CT_JSON,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if ctx.controls.gzip:
        body = gzip.compress(body)
        all_headers["Content-Encoding"] = "gzip"
    size = ctx.controls.chunk_bytes
    if not size:
        return web.Response(status=status, body=body, headers=all_headers)
    resp = web.StreamResponse(status=status, headers=all_headers)
    resp.content_length = len(body)
    await resp.prepare(ctx.request)
    await _write_pieces(ctx, resp, split(body, size))
    await resp.write_eof()
    return resp


async def send_stream(
    ctx: Ctx, events: list[bytes], content_type: str, terminator: bytes | None, error: bytes
) -> web.StreamResponse:
    after = ctx.controls.stream_error_after
    if after is not None:
        events = [*events[: max(0, after)], error]  # mid-stream failure: no terminator
    elif terminator is not None:
        events = [*events, terminator]
    return await send_chunked(ctx, events, content_type)


async def send_chunked(ctx: Ctx, events: list[bytes], content_type: str) -> web.StreamResponse:
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
    if content_type == CT_EVENTSTREAM:
        headers["x-amzn-RequestId"] = "mock-request-id"
    if ctx.controls.gzip:
        headers["Content-Encoding"] = "gzip"
        events = _gzip_events(events)
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(ctx.request)
    size = ctx.controls.chunk_bytes
    await _write_pieces(ctx, resp, split(b"".join(events), size) if size else events)
    await resp.write_eof()
    return resp


def _gzip_events(events: list[bytes]) -> list[bytes]:
    """One gzip stream, flushed after each event so a reader can decode as it goes."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    out = [packer.compress(e) + packer.flush(zlib.Z_SYNC_FLUSH) for e in events]
    out[-1:] = [(out[-1] if out else b"") + packer.flush()]
    return out


def error_body(
    provider: str, status: int, message: str | None, is_auth: bool = False
) -> tuple[bytes, dict[str, str]]:
    headers: dict[str, str] = {}
    if status in (429, 503, 529):
        headers["retry-after"] = "1"
    if provider == "bedrock":
        body, error_type = formats.bedrock_error(status, message)
        headers["x-amzn-ErrorType"] = error_type
        headers["x-amzn-RequestId"] = "mock-request-id"
        return body, headers
    # Vertex authenticates before reaching Claude, so its 401s are Google-shaped even for rawPredict.
    if provider in ("gemini", "vertex-gemini") or (provider == "vertex-anthropic" and is_auth):
        return formats.google_error(status, message), headers
    if provider in ("anthropic", "vertex-anthropic"):
        return formats.anthropic_error(status, message), headers
    return formats.openai_error(status, message), headers


async def send_error(
    ctx: Ctx, status: int, message: str | None = None, is_auth: bool = False
) -> web.StreamResponse:
    body, headers = error_body(ctx.provider, status, message, is_auth)
    return await send_body(ctx, body, status=status, headers=headers)
