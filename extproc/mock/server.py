"""Built-in mock LLM provider: one aiohttp server speaking OpenAI, Azure, Anthropic, Gemini, Vertex and
Bedrock on their real paths and wire formats. Request headers (``x-mock-*``) steer it so tests can
drive errors, delays, awkward chunking and fixture replay through the gateway.

Embeddings: OpenAI/Azure ``/embeddings``, Gemini ``:embedContent``/``:batchEmbedContents``, Vertex
``:predict`` on Google models and Bedrock ``/model/{id}/invoke`` for Titan, Cohere and Nova embedding
models (validation and bodies in ``embeddings``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import re
import sys
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import web

from extproc.mock import auth, embeddings, formats
from extproc.mock.conversation import JSON, Conversation, Reply, plan_reply, word_count
from extproc.mock.parsing import parse_anthropic, parse_bedrock, parse_gemini, parse_openai

DEFAULT_FIXTURE_DIR = Path(
    os.environ.get("MOCK_FIXTURE_DIR", "/work/shared/conformance/agentgateway/response")
)
RECORD_LIMIT = 200
MAX_BODY = 64 * 1024 * 1024

CT_JSON = "application/json"
CT_SSE = "text/event-stream"
CT_EVENTSTREAM = "application/vnd.amazon.eventstream"


class BadRequest(Exception):
    """Raised by handlers to answer 400 in the provider's own error shape."""


# --- state --------------------------------------------------------------------------------------------


@dataclass
class MockState:
    force_status: int | None
    name: str
    fixture_dir: Path
    requests: deque[JSON] = field(default_factory=lambda: deque(maxlen=RECORD_LIMIT))
    fixtures: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _ids: count[int] = field(default_factory=lambda: count(1))

    def next_id(self) -> int:
        return next(self._ids)

    def label(self, provider: str) -> str:
        return f"{provider}[{self.name}]" if self.name else provider


STATE = web.AppKey("mock_state", MockState)


@dataclass(frozen=True, slots=True)
class Controls:
    status: int | None = None
    delay_ms: int = 0
    chunk_bytes: int = 0
    chunk_delay_ms: int = 0
    stream_error_after: int | None = None
    fixture: str | None = None
    gzip: bool = False  # answer with Content-Encoding: gzip, as some providers and proxies do

    @classmethod
    def from_headers(cls, headers: Any) -> Controls:
        if not any(k[:7].lower() == "x-mock-" for k in headers):
            return _NO_CONTROLS  # fast path: the benchmark never sets controls
        status = _int_header(headers, "x-mock-status")
        return cls(
            status=status if status is not None and status >= 400 else None,
            delay_ms=max(0, _int_header(headers, "x-mock-delay-ms") or 0),
            chunk_bytes=max(0, _int_header(headers, "x-mock-chunk-bytes") or 0),
            chunk_delay_ms=max(0, _int_header(headers, "x-mock-chunk-delay-ms") or 0),
            stream_error_after=_int_header(headers, "x-mock-stream-error-after"),
            fixture=headers.get("x-mock-fixture") or None,
            gzip=headers.get("x-mock-gzip", "") in ("1", "true"),
        )


def _int_header(headers: Any, name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


_NO_CONTROLS = Controls()


# --- providers and routing ----------------------------------------------------------------------------


@dataclass(slots=True)
class Ctx:
    request: web.Request
    state: MockState
    body: bytes
    controls: Controls
    provider: str
    params: dict[str, str]

    def json(self) -> JSON:
        try:
            parsed = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise BadRequest("Request body must be a JSON object.")
        return parsed


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]

# Label used in reply text per provider key.
_LABELS = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex-gemini": "vertex",
    "vertex-anthropic": "vertex",
    "bedrock": "bedrock",
}

_AUTH: dict[str, auth.Checker] = {
    "openai": auth.openai,
    "azure": auth.azure,
    "anthropic": auth.anthropic,
    "gemini": auth.gemini,
    "vertex-gemini": auth.vertex,
    "vertex-anthropic": auth.vertex,
    "bedrock": auth.bedrock,
    "google-oauth": lambda headers, query: None,  # the token endpoint authenticates by the signed assertion
}

_VERTEX = r"^/v1(?:beta1)?/projects/[^/]+/locations/[^/]+/publishers"
_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    # Google's OAuth token endpoint (a service account's ``token_uri``), for Vertex ADC tests.
    ("POST", re.compile(r"^/token$"), "google-oauth", "token"),
    ("POST", re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$"), "azure", "chat"),
    ("POST", re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/embeddings$"), "azure", "embeddings"),
    # Before the generic Google routes: these actions are embeddings, every other one is Gemini.
    (
        "POST",
        re.compile(_VERTEX + r"/google/models/(?P<model>[^/:]+):(?P<action>predict)$"),
        "vertex-gemini",
        "vertex_predict",
    ),
    (
        "POST",
        re.compile(_VERTEX + r"/google/models/(?P<model>[^/:]+):(?P<action>\w+)$"),
        "vertex-gemini",
        "gemini",
    ),
    (
        "POST",
        re.compile(_VERTEX + r"/anthropic/models/(?P<model>[^/:]+):(?P<action>\w+)$"),
        "vertex-anthropic",
        "raw_predict",
    ),
    (
        "POST",
        re.compile(
            r"^/v1(?:alpha|beta)?/models/(?P<model>[^/:]+):(?P<action>embedContent|batchEmbedContents)$"
        ),
        "gemini",
        "gemini_embed",
    ),
    (
        "POST",
        re.compile(r"^/v1(?:alpha|beta)?/models/(?P<model>[^/:]+):(?P<action>\w+)$"),
        "gemini",
        "gemini",
    ),
    (
        "POST",
        re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream)$"),
        "bedrock",
        "converse",
    ),
    ("POST", re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>invoke)$"), "bedrock", "invoke"),
    ("POST", re.compile(r"^(?:/.*)?/v1/messages/count_tokens$"), "anthropic", "count_tokens"),
    ("POST", re.compile(r"^(?:/.*)?/v1/messages$"), "anthropic", "messages"),
    ("POST", re.compile(r"^(?:/.*)?/chat/completions$"), "openai", "chat"),
    ("POST", re.compile(r"^(?:/.*)?/embeddings$"), "openai", "embeddings"),
    ("GET", re.compile(r"^(?:/.*)?/models$"), "openai", "models"),
]


def match_route(method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
    """Return (provider, operation, url-decoded params) for a raw (still percent-encoded) path."""
    for route_method, pattern, provider, op in _ROUTES:
        if method != route_method:
            continue
        found = pattern.match(path)
        if found:
            params = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
            return provider, op, params
    return None


# --- writing ------------------------------------------------------------------------------------------


def _split(data: bytes, size: int) -> list[bytes]:
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
    await _write_pieces(ctx, resp, _split(body, size))
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
    return await _send_chunked(ctx, events, content_type)


async def _send_chunked(ctx: Ctx, events: list[bytes], content_type: str) -> web.StreamResponse:
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
    if content_type == CT_EVENTSTREAM:
        headers["x-amzn-RequestId"] = "mock-request-id"
    if ctx.controls.gzip:
        headers["Content-Encoding"] = "gzip"
        events = _gzip_events(events)
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(ctx.request)
    size = ctx.controls.chunk_bytes
    await _write_pieces(ctx, resp, _split(b"".join(events), size) if size else events)
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


# --- fixtures -----------------------------------------------------------------------------------------

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
    return await _send_chunked(ctx, _split(data, size) if size else [data], content_type)


# --- operations ---------------------------------------------------------------------------------------


def _reply(ctx: Ctx, conv: Conversation, id_prefix: str, call_prefix: str) -> Reply:
    label = ctx.state.label(_LABELS[ctx.provider])
    seq = ctx.state.next_id()
    return plan_reply(conv, label, f"{id_prefix}{seq}", f"{call_prefix}{seq}")


def _require_list(body: JSON, key: str, message: str) -> None:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise BadRequest(message)


async def op_chat(ctx: Ctx) -> web.StreamResponse:
    if ctx.provider == "azure" and "api-version" not in ctx.request.query:
        raise BadRequest("Missing required query parameter: api-version")
    body = ctx.json()
    _require_list(body, "messages", "'messages' is a required property and must be a non-empty array.")
    if ctx.provider == "openai" and not body.get("model"):
        raise BadRequest("you must provide a model parameter")
    conv = parse_openai(body, ctx.params.get("deployment", ""))
    reply = _reply(ctx, conv, "chatcmpl-mock", "call_mock")
    if conv.stream:
        events = formats.openai_stream(reply, conv.model, conv.include_usage)
        return await send_stream(ctx, events, CT_SSE, formats.OPENAI_DONE, formats.openai_stream_error())
    return await send_body(ctx, formats.openai_response(reply, conv.model))


async def op_embeddings(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    if "input" not in body:
        raise BadRequest("'input' is a required property")
    model = str(body.get("model") or ctx.params.get("deployment", ""))
    return await send_body(ctx, formats.openai_embeddings(body, model))


async def op_token(ctx: Ctx) -> web.StreamResponse:
    """RFC 7523 JWT-bearer grant, as google-auth sends it for a service account."""
    form = dict(parse_qsl(ctx.body.decode("utf-8", "replace")))
    assertion = form.get("assertion", "")
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
        return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT."}, status=400)
    token = f"ya29.mock-{ctx.state.next_id()}"
    return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


async def op_models(ctx: Ctx) -> web.StreamResponse:
    return await send_body(ctx, formats.OPENAI_MODELS)


def _validate_anthropic(ctx: Ctx, body: JSON) -> str:
    """Apply the checks the real Messages API (or Vertex rawPredict) makes; return the model."""
    if ctx.provider == "vertex-anthropic":
        if "anthropic_version" not in body:
            raise BadRequest("anthropic_version: Field required")
        if "model" in body:
            raise BadRequest("model: Extra inputs are not permitted")
        model = ctx.params["model"]
    else:
        if "anthropic-version" not in ctx.request.headers:
            raise BadRequest("anthropic-version: header is required")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
    if not isinstance(body.get("max_tokens"), int):
        raise BadRequest("max_tokens: Field required")
    _require_list(body, "messages", "messages: Field required")
    return model


async def op_messages(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    model = _validate_anthropic(ctx, body)
    conv = parse_anthropic(body, model)
    conv.model = model
    reply = _reply(ctx, conv, "msg_mock", "toolu_mock")
    if conv.stream or ctx.params.get("action") == "streamRawPredict":
        events = formats.anthropic_stream(reply, model)
        return await send_stream(ctx, events, CT_SSE, None, formats.anthropic_stream_error())
    return await send_body(ctx, formats.anthropic_response(reply, model))


async def op_raw_predict(ctx: Ctx) -> web.StreamResponse:
    if ctx.params["action"] not in ("rawPredict", "streamRawPredict"):
        return await send_error(ctx, 404, f"Unsupported method: {ctx.params['action']}")
    return await op_messages(ctx)


async def op_count_tokens(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    conv = parse_anthropic(body)
    tokens = max(1, sum(word_count(t) for t in conv.texts))
    return await send_body(ctx, orjson.dumps({"input_tokens": tokens}))


async def op_gemini(ctx: Ctx) -> web.StreamResponse:
    action, model = ctx.params["action"], ctx.params["model"]
    if action not in ("generateContent", "streamGenerateContent", "countTokens"):
        return await send_error(ctx, 404, f"Method not found: {action}")
    body = ctx.json()
    conv = parse_gemini(body, model)
    if action == "countTokens":
        return await send_body(
            ctx, orjson.dumps({"totalTokens": max(1, sum(word_count(t) for t in conv.texts))})
        )
    _require_list(body, "contents", "* GenerateContentRequest.contents: contents is not specified")
    reply = _reply(ctx, conv, "mock-resp-", "")
    if action == "generateContent":
        return await send_body(ctx, formats.gemini_response(reply, model))
    payloads = formats.gemini_stream_payloads(reply, model)
    error = formats.gemini_stream_error_payload()
    if ctx.request.query.get("alt") == "sse":
        events = [formats.gemini_sse(p) for p in payloads]
        return await send_stream(ctx, events, CT_SSE, None, formats.gemini_sse(error))
    # Without alt=sse Google streams one JSON array; a mid-stream error becomes its last element.
    after = ctx.controls.stream_error_after
    if after is not None:
        payloads = [*payloads[: max(0, after)], error]
    return await _send_chunked(ctx, formats.gemini_json_array(payloads), CT_JSON)


async def op_converse(ctx: Ctx) -> web.StreamResponse:
    body = ctx.json()
    _require_list(body, "messages", "A conversation must start with a user message.")
    conv = parse_bedrock(body, ctx.params["model"])
    reply = _reply(ctx, conv, "mock", "tooluse_mock")
    if ctx.params["action"] == "converse-stream":
        events = formats.bedrock_stream(reply)
        return await send_stream(ctx, events, CT_EVENTSTREAM, None, formats.bedrock_stream_error())
    return await send_body(
        ctx, formats.bedrock_response(reply), headers={"x-amzn-RequestId": "mock-request-id"}
    )


async def op_gemini_embed(ctx: Ctx) -> web.StreamResponse:
    handler = (
        embeddings.gemini_batch_embed
        if ctx.params["action"] == "batchEmbedContents"
        else embeddings.gemini_embed_content
    )
    return await send_body(ctx, handler(ctx.json(), ctx.params["model"]).body)


async def op_vertex_predict(ctx: Ctx) -> web.StreamResponse:
    return await send_body(ctx, embeddings.vertex_predict(ctx.json(), ctx.params["model"]).body)


async def op_invoke(ctx: Ctx) -> web.StreamResponse:
    request_id = f"mock-embed-{ctx.state.next_id()}"
    answer = embeddings.bedrock_invoke(ctx.json(), ctx.params["model"], request_id)
    headers = {"x-amzn-RequestId": "mock-request-id", "X-Amzn-Bedrock-Invocation-Latency": "1"}
    if answer.input_tokens is not None:
        # Amazon's models report input tokens in this header (the body may not carry them).
        headers["X-Amzn-Bedrock-Input-Token-Count"] = str(answer.input_tokens)
    return await send_body(ctx, answer.body, headers=headers)


_OPS: dict[str, Handler] = {
    "token": op_token,
    "chat": op_chat,
    "embeddings": op_embeddings,
    "models": op_models,
    "messages": op_messages,
    "raw_predict": op_raw_predict,
    "count_tokens": op_count_tokens,
    "gemini": op_gemini,
    "converse": op_converse,
    "gemini_embed": op_gemini_embed,
    "vertex_predict": op_vertex_predict,
    "invoke": op_invoke,
}


# --- request pipeline ---------------------------------------------------------------------------------


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
    denied = _AUTH[ctx.provider](ctx.request.headers, ctx.request.query)
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
        return await _OPS[op](ctx)
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
