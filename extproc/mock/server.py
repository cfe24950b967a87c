"""Built-in mock LLM provider: one aiohttp server speaking OpenAI, Azure, Anthropic, Gemini, Vertex and
Bedrock on their real paths and wire formats. Request headers (``x-mock-*``) steer it so tests can
drive errors, delays, awkward chunking and fixture replay through the gateway.

Embeddings: OpenAI/Azure ``/embeddings``, Gemini ``:embedContent``/``:batchEmbedContents``, Vertex
``:predict`` on Google models and Bedrock ``/model/{id}/invoke`` for Titan, Cohere and Nova embedding
models (validation and bodies in ``embeddings``).

This module is the aiohttp app and the request pipeline (introspection, force-status, auth, controls,
fixtures, unknown models, then the operation). Beside it: ``routes`` (paths and provider keys),
``controls`` (the ``x-mock-*`` headers), ``send`` (writing answers), ``fixtures``, ``ops`` (one module
per provider family) and ``formats`` (one module per wire format).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import orjson
from aiohttp import web

from extproc.mock import embeddings, formats
from extproc.mock.context import CT_JSON, DEFAULT_FIXTURE_DIR, STATE, BadRequest, Ctx, MockState
from extproc.mock.controls import Controls
from extproc.mock.fixtures import send_fixture
from extproc.mock.ops import OPS
from extproc.mock.routes import AUTH, match_route
from extproc.mock.send import send_error

# Imported from here by the CLI and the tests (defined in context and routes).
__all__ = ["DEFAULT_FIXTURE_DIR", "create_app", "main", "match_route"]

MAX_BODY = 64 * 1024 * 1024


def _record(state: MockState, request: web.Request, body: bytes) -> None:
    state.requests.append(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": {str(k): v for k, v in request.headers.items()},  # istr keys: orjson wants str
            "body": body.decode("utf-8", "replace"),
        }
    )


async def _introspect(request: web.Request, state: MockState, path: str) -> web.StreamResponse:
    if path == "/__mock/health":
        return web.Response(body=orjson.dumps({"status": "ok", "name": state.name}), content_type=CT_JSON)
    if path == "/__mock/requests" and request.method == "GET":
        return web.Response(body=orjson.dumps(list(state.requests)), content_type=CT_JSON)
    if path == "/__mock/requests" and request.method == "DELETE":
        cleared = len(state.requests)
        state.requests.clear()
        return web.Response(body=orjson.dumps({"cleared": cleared}), content_type=CT_JSON)
    return web.Response(status=404, body=b'{"error":"unknown mock endpoint"}', content_type=CT_JSON)


async def _serve(ctx: Ctx, op: str) -> web.StreamResponse:
    controls, state = ctx.controls, ctx.state
    if controls.delay_ms:
        await asyncio.sleep(controls.delay_ms / 1000)
    if state.force_status is not None:
        return await send_error(ctx, state.force_status)
    denied = AUTH[ctx.provider](ctx.request.headers, ctx.request.query)
    if denied is not None:
        return await send_error(ctx, 401, denied, is_auth=True)
    if controls.status is not None:
        return await send_error(ctx, controls.status)
    if controls.fixture:
        return await send_fixture(ctx, controls.fixture)
    unknown = _unknown_model(ctx) if op not in ("models", "token") else None
    if unknown is not None:
        return await _send_unknown_model(ctx, unknown)
    try:
        return await OPS[op](ctx)
    except (BadRequest, embeddings.Invalid) as exc:
        return await send_error(ctx, 400, str(exc))


def _unknown_model(ctx: Ctx) -> str | None:
    """Models named ``unknown*`` do not exist (a test hook, like keys named ``invalid*``)."""
    model = ctx.params.get("model") or ctx.params.get("deployment")
    if not model:
        with contextlib.suppress(Exception):
            model = str(ctx.json().get("model") or "")
    return model if model and model.startswith("unknown") else None


async def _send_unknown_model(ctx: Ctx, model: str) -> web.StreamResponse:
    """Each provider's own answer to a model it does not have."""
    if ctx.provider == "bedrock":
        return await send_error(ctx, 400, "The provided model identifier is invalid.")
    if ctx.provider in ("gemini", "vertex-gemini"):
        return await send_error(ctx, 404, f"models/{model} is not found for API version v1beta.")
    if ctx.provider in ("anthropic", "vertex-anthropic"):
        return await send_error(ctx, 404, f"model: {model}")
    return await send_error(ctx, 404, f"The model `{model}` does not exist or you do not have access to it.")


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    path = request.raw_path.partition("?")[0]
    if path.startswith("/__mock/"):
        return await _introspect(request, state, path)
    body = await request.read()
    _record(state, request, body)
    matched = match_route(request.method, path)
    if matched is None:
        message = f"mock: no route for {request.method} {path}"
        return web.Response(status=404, body=formats.openai_error(404, message), content_type=CT_JSON)
    provider, op, params = matched
    ctx = Ctx(request, state, body, Controls.from_headers(request.headers), provider, params)
    return await _serve(ctx, op)


def create_app(
    force_status: int | None = None, name: str = "", *, fixture_dir: Path | str | None = None
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = MockState(force_status, name, Path(fixture_dir) if fixture_dir else DEFAULT_FIXTURE_DIR)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extproc mock", description="Mock LLM provider (all dialects).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--force-status", type=int, default=None, help="answer every request with this status"
    )
    parser.add_argument("--name", default="", help="instance name shown in reply text, e.g. anthropic[NAME]")
    parser.add_argument("--fixture-dir", default=None, help=f"fixture root (default {DEFAULT_FIXTURE_DIR})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    loop = None
    with contextlib.suppress(ImportError):
        import uvloop  # optional: a faster event loop when installed

        loop = uvloop.new_event_loop()
    app = create_app(args.force_status, args.name, fixture_dir=args.fixture_dir)
    print(f"mock provider listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
