"""Hostile and malformed input through the real Envoy: every refusal is a client error in the
client API's JSON, never a 500 or "the gateway is unavailable"."""

from __future__ import annotations

import gzip
import random
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import (
    OPENAI_KEY,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)
from tests.unit.wrong_types import mutate

HELLO = [{"role": "user", "content": "hi"}]
CHAT_ROUTES = ["/openai", "/anthropic", "/gemini", "/bedrock"]
MODELS = {
    "/openai": "gpt-4o",
    "/anthropic": "claude-3-5-haiku-latest",
    "/gemini": "gemini-2.5-flash",
    "/bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0",
}


def post(gw: Gateway, path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        gw.url + path, content=content, headers={"content-type": "application/json", **headers}, timeout=15
    )


def openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["message"]
    return err


def anthropic_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["type"] == "error" and body["error"]["message"]
    return body["error"]


# --- wrong types ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", CHAT_ROUTES)
def test_stream_options_true_is_a_400_on_every_chat_route(gateway: Gateway, prefix: str) -> None:
    body = {"model": MODELS[prefix], "messages": HELLO, "stream": True, "stream_options": True}
    err = openai_error(post(gateway, f"{prefix}/v1/chat/completions", body), 400)
    assert err["param"] == "stream_options" and err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_type"


@pytest.mark.parametrize(
    ("prefix", "field", "value", "param"),
    [
        ("/bedrock", "tools", "bad", "tools"),
        ("/anthropic", "messages", ["hi"], "messages[0]"),
        ("/gemini", "stop", 5, "stop"),
        ("/gemini", "response_format", {"type": "json_schema", "json_schema": "s"}, "response_format.json_schema"),
        ("/anthropic", "reasoning_effort", ["high"], "reasoning_effort"),
        ("/bedrock", "max_completion_tokens", "100", "max_completion_tokens"),
        ("/anthropic", "tool_choice", {"type": "function", "function": "f"}, "tool_choice.function"),
        ("/bedrock", "messages", [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": 1}]}],
         "messages[0].tool_calls[0].function"),
        ("/gemini", "messages", [{"role": "user", "content": [{"type": "text", "text": {}}]}], "messages[0].content[0].text"),
        ("/openai", "model", 5, "model"),
    ],
)  # fmt: skip
def test_a_wrong_typed_chat_field_is_a_400_naming_it(
    gateway: Gateway, prefix: str, field: str, value: Any, param: str
) -> None:
    body = {"model": MODELS[prefix], "messages": HELLO, field: value}
    err = openai_error(post(gateway, f"{prefix}/v1/chat/completions", body), 400)
    assert err["param"] == param, err


@pytest.mark.parametrize("prefix", CHAT_ROUTES)
def test_a_wrong_typed_messages_field_is_a_400_in_anthropics_shape(gateway: Gateway, prefix: str) -> None:
    source = {"type": "base64", "media_type": 5, "data": "AAAA"}
    body = {
        "model": MODELS[prefix],
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}],
    }
    err = anthropic_error(post(gateway, f"{prefix}/v1/messages", body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("messages.0.content.0.source.media_type: ")


def test_nesting_deeper_than_the_gateway_serializes_is_a_400(gateway: Gateway) -> None:
    schema = b'{"a":' * 300 + b"1" + b"}" * 300
    raw = (
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],'
        b'"tools":[{"type":"function","function":{"name":"f","parameters":' + schema + b"}}]}"
    )
    for prefix in CHAT_ROUTES:
        err = openai_error(post(gateway, f"{prefix}/v1/chat/completions", raw), 400)
        assert "nested too deeply" in err["message"]


# --- values that travel in headers and paths --------------------------------------------------------


@pytest.mark.parametrize("prefix", CHAT_ROUTES)
def test_a_100k_model_name_is_a_400_not_the_gateway_unavailable(gateway: Gateway, prefix: str) -> None:
    body = {"model": "m" * 100_000, "messages": HELLO}
    err = openai_error(post(gateway, f"{prefix}/v1/chat/completions", body), 400)
    assert err["param"] == "model" and err["code"] == "string_above_max_length"
    err = anthropic_error(post(gateway, f"{prefix}/v1/messages", {**body, "max_tokens": 5}), 400)
    assert err["message"].startswith("model: ")


# --- empty bodies and methods -------------------------------------------------------------------


# A chunked body says JSON in its headers before it turns out empty (without a content type
# it is a 415 at the headers: the LLM APIs take JSON only).
@pytest.mark.parametrize(
    "headers",
    [{}, {"content-length": "0"}, {"transfer-encoding": "chunked", "content-type": "application/json"}],
)
def test_an_empty_post_is_a_400_saying_the_body_is_empty(gateway: Gateway, headers: dict) -> None:
    resp = httpx.post(gateway.url + "/anthropic/v1/chat/completions", headers=headers, timeout=15)
    err = openai_error(resp, 400)
    assert err["message"].startswith("the request body is empty; send a JSON chat completions request")
    resp = httpx.post(gateway.url + "/anthropic/v1/messages", headers=headers, timeout=15)
    assert anthropic_error(resp, 400)["message"].startswith("the request body is empty; send a JSON Messages")


def test_a_get_on_chat_completions_says_use_post(gateway: Gateway) -> None:
    err = openai_error(httpx.get(gateway.url + "/openai/v1/chat/completions", timeout=15), 405)
    assert err["message"] == "GET is not allowed on /openai/v1/chat/completions; use POST"


# --- request content-encoding -----------------------------------------------------------------------


def test_a_gzip_body_is_decoded_and_goes_on_plain(gateway: Gateway) -> None:
    for prefix in ("/openai", "/anthropic"):
        plain = orjson.dumps({"model": MODELS[prefix], "messages": [{"role": "user", "content": "zipped"}]})
        gateway.mock.clear()
        resp = post(
            gateway, f"{prefix}/v1/chat/completions", gzip.compress(plain), **{"content-encoding": "gzip"}
        )
        assert resp.status_code == 200, resp.text
        assert "zipped" in resp.json()["choices"][0]["message"]["content"]
        (seen,) = gateway.mock.requests()
        assert "content-encoding" not in seen["headers"]
        assert orjson.loads(seen["body"])["messages"][0]["content"] in (
            "zipped",
            [{"type": "text", "text": "zipped"}],
        )
        assert int(seen["headers"]["content-length"]) == len(seen["body"].encode())


def test_a_deflate_body_is_decoded_too(gateway: Gateway) -> None:
    plain = orjson.dumps({"model": "gpt-4o", "messages": HELLO})
    resp = post(
        gateway, "/openai/v1/chat/completions", zlib.compress(plain), **{"content-encoding": "deflate"}
    )
    assert resp.status_code == 200, resp.text


def test_a_zip_bomb_is_a_413_after_decoding_only_the_limit(gateway: Gateway) -> None:
    # 20 MB of spaces inside the JSON: about 20 kB compressed, far under the 256 kB body limit.
    bomb = gzip.compress(
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b" " * 20_000_000 + b'"}]}'
    )
    assert len(bomb) < 64 * 1024
    resp = post(gateway, "/openai/v1/chat/completions", bomb, **{"content-encoding": "gzip"})
    err = openai_error(resp, 413)
    assert "larger than this gateway accepts" in err["message"]


def test_a_corrupt_gzip_body_is_a_400(gateway: Gateway) -> None:
    resp = post(
        gateway, "/openai/v1/chat/completions", b"\x1f\x8b\x08not gzip", **{"content-encoding": "gzip"}
    )
    assert openai_error(resp, 400)["code"] == "invalid_content_encoding"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_an_encoding_the_gateway_cannot_decode_is_a_415(gateway: Gateway, encoding: str) -> None:
    body = orjson.dumps({"model": "gpt-4o", "messages": HELLO})
    err = openai_error(
        post(gateway, "/openai/v1/chat/completions", body, **{"content-encoding": encoding}), 415
    )
    assert "gzip" in err["message"] and "deflate" in err["message"]
    resp = post(gateway, "/anthropic/v1/messages", body, **{"content-encoding": encoding})
    anthropic_error(resp, 415)


# --- path normalization ---------------------------------------------------------------------------


def raw_request(gw: Gateway, request: bytes) -> tuple[int, bytes, bytes]:
    """One request as raw bytes (no client library tidies the path): status, head, body."""
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head.split(b" ")[1]), head, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2 :]
    return out


def post_raw_path(gw: Gateway, path: str, body: dict) -> tuple[int, dict]:
    payload = orjson.dumps(body)
    request = (
        f"POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    status, _, out = raw_request(gw, request)
    return status, orjson.loads(out)


@pytest.mark.parametrize(
    "path",
    [
        "/openai/../anthropic/v1/chat/completions",
        "/openai/%2e%2e/anthropic/v1/chat/completions",
        "/openai/%2E%2E/anthropic/v1/chat/completions",
        "/openai/./../anthropic/v1/./chat/completions",
        "//anthropic//v1/chat//completions",
    ],
)
def test_dot_segments_and_repeated_slashes_are_resolved_before_routing(gateway: Gateway, path: str) -> None:
    """The route is the one the path names once resolved, and the provider sees that path too."""
    gateway.mock.clear()
    status, body = post_raw_path(gateway, path, {"model": MODELS["/anthropic"], "messages": HELLO})
    assert status == 200, body
    assert "anthropic" in body["choices"][0]["message"]["content"]  # the mock names the format it spoke
    (seen,) = gateway.mock.requests()
    assert seen["path"] == "/v1/messages"


def test_dot_segments_cannot_reach_a_path_the_route_does_not_serve(gateway: Gateway) -> None:
    status, body = post_raw_path(gateway, "/openai/v1/chat/completions/../../files", {"purpose": "x"})
    assert status == 404, body
    assert body["error"]["code"] == "unknown_path"


@pytest.mark.parametrize(
    "path", ["/openai%2F..%2Fanthropic/v1/chat/completions", "/openai/v1%2fchat/completions"]
)
def test_an_escaped_slash_is_refused_in_json(gateway: Gateway, path: str) -> None:
    status, body = post_raw_path(gateway, path, {"model": "gpt-4o", "messages": HELLO})
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


# --- Envoy's own codec refusals ------------------------------------------------------------------


CHAT = orjson.dumps({"model": "gpt-4o", "messages": HELLO})
CODEC_CASES: dict[str, tuple[bytes, int]] = {
    "unknown method": (b"FROB /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n", 400),
    "garbage request line": (b"NOT HTTP AT ALL\r\n\r\n", 400),
    "bad chunk size": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "content-length and chunked": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "HTTP/1.0": (
        b"POST /openai/v1/chat/completions HTTP/1.0\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(CHAT) + CHAT,
        426,
    ),
    "too many headers": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
        + b"".join(b"x-h%d: v\r\n" % i for i in range(150))
        + b"content-length: %d\r\n\r\n" % len(CHAT) + CHAT,
        431,
    ),
    "headers too large": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000
        + b"\r\ncontent-length: %d\r\n\r\n" % len(CHAT) + CHAT,
        431,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CODEC_CASES))
def test_envoys_codec_refusals_are_json(gateway: Gateway, case: str) -> None:
    request, status = CODEC_CASES[case]
    got, head, body = raw_request(gateway, request)
    assert got == status, head + body
    assert b"content-type: application/json" in head.lower(), head
    err = orjson.loads(body)["error"]
    assert err["message"] and err["type"] == "invalid_request_error"


def test_codec_refusals_after_the_headers_follow_the_paths_api(gateway: Gateway) -> None:
    """A body Envoy cannot parse (bad chunking) on a Messages path is refused in Anthropic's shape;
    before the headers are complete (431) the path is unknown, and the shape is OpenAI's."""
    request = b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n"
    status, _, body = raw_request(gateway, request)
    assert status == 400
    error = orjson.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


# --- a gateway with a large body limit and a passthrough route ------------------------------------


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Bodies up to 4 MB, so a 1 MB model reaches the sidecar; ``/pt`` passes other paths through."""
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    routes = [
        provider_route("gemini", "/gemini", {"gemini": {}}, host, "k"),
        provider_route("pt", "/pt", {"openAI": {}}, host, OPENAI_KEY, ai={"routes": {"*": "passthrough"}}),
        provider_route(
            "checked", "/checked", {"openAI": {}}, host, OPENAI_KEY, modelAccess={"default": ["gpt-4o-mini"]}
        ),
    ]
    config = listener_config(routes, maxRequestBytes=4 * 1024 * 1024, sidecarTimeout="2s")
    tmp: Path = tmp_path_factory.mktemp("roomy")
    with running([mock], lambda: launch(tmp, config, mock)) as gw:
        yield gw


def test_a_1mb_model_is_a_400_where_the_body_limit_lets_it_in(roomy: Gateway) -> None:
    body = {"model": "m" * 1024 * 1024, "messages": HELLO}
    err = openai_error(post(roomy, "/gemini/v1/chat/completions", body), 400)
    assert err["param"] == "model"


def test_an_encoded_body_is_a_415_where_authz_reads_the_body(roomy: Gateway) -> None:
    """authz judges the body as sent: a compressed one names no model. Decoded after the check,
    it could name any; so on a checked route an encoded body is refused, and a plain one is judged."""
    for model in ("gpt-4o", "gpt-4o-mini"):
        body = gzip.compress(orjson.dumps({"model": model, "messages": HELLO}))
        resp = post(roomy, "/checked/v1/chat/completions", body, **{"content-encoding": "gzip"})
        assert openai_error(resp, 415)["code"] == "unsupported_content_encoding"
    assert (
        post(roomy, "/checked/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO}).status_code == 403
    )
    assert (
        post(roomy, "/checked/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO}).status_code
        == 200
    )


def test_a_passthrough_body_keeps_its_encoding_header(roomy: Gateway) -> None:
    """Passed through untouched: the body and its content-encoding go together (the provider decodes)."""
    plain = b'{"purpose": "batch"}'
    roomy.mock.clear()
    httpx.post(
        roomy.url + "/pt/v1/files",
        content=gzip.compress(plain),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
        timeout=15,
    )
    (seen,) = roomy.mock.requests()
    assert seen["path"] == "/pt/v1/files"
    assert seen["headers"].get("content-encoding") == "gzip"


# --- fuzz smoke ---------------------------------------------------------------------------------


_BASES: list[tuple[str, dict]] = [
    ("chat/completions", {
        "model": "m", "stream": False, "max_tokens": 50, "temperature": 0.5, "stop": ["x"],
        "messages": [{"role": "system", "content": "s"},
                     {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": "c", "content": "r"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "response_format": {"type": "json_object"},
    }),
    ("messages", {
        "model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "s"}], "stop_sequences": ["x"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"},
    }),
]  # fmt: skip


def test_fuzzed_requests_through_envoy_get_no_5xx_from_the_gateway(gateway: Gateway) -> None:
    """A few hundred wrong-typed requests on every route and both client APIs: each answer is a
    provider's or a client error; a 5xx only ever comes from the provider (which saw the request)."""
    rng = random.Random(12)
    seen_statuses: set[int] = set()
    with httpx.Client(timeout=15) as client:
        for i in range(320):
            suffix, base = _BASES[i % 2]
            prefix = CHAT_ROUTES[(i // 2) % 4]
            body = mutate(mutate({**base, "model": MODELS[prefix]}, rng), rng)
            gateway.mock.clear()
            resp = client.post(f"{gateway.url}{prefix}/v1/{suffix}", content=orjson.dumps(body),
                               headers={"content-type": "application/json"})  # fmt: skip
            seen_statuses.add(resp.status_code)
            assert resp.headers["content-type"].startswith(("application/json", "text/event-stream")), (
                resp.text
            )
            if resp.status_code >= 500:
                assert gateway.mock.requests(), f"{prefix}/v1/{suffix} {body}: {resp.status_code} {resp.text}"
    assert 400 in seen_statuses and 200 in seen_statuses
