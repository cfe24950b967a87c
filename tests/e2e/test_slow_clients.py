"""Slow and greedy clients, through the real Envoy, on raw sockets (an HTTP client library would not
misbehave on purpose): half a body then silence, a byte every few hundred milliseconds, headers
that never end, idle connections, more connections than the gateway allows. Each is cut within
the configured time, with the client API's JSON where HTTP still allows an answer. A long
streamed answer is not cut by any of these limits."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
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

HEADERS_TIMEOUT = 1.0
UPLOAD_TIMEOUT = 2.0
IDLE_TIMEOUT = 2.0
MAX_CONNECTIONS = 24
BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"x" * 200 + b'"}]}'


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mock = start_mock()
    config = listener_config(
        [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)],
        requestHeadersTimeout=f"{HEADERS_TIMEOUT}s",
        uploadTimeout=f"{UPLOAD_TIMEOUT}s",
        idleConnectionTimeout=f"{IDLE_TIMEOUT}s",
        maxConnections=MAX_CONNECTIONS,
    )
    tmp = tmp_path_factory.mktemp("slow-clients")
    with running([mock], lambda: launch(tmp, config, mock)) as gateway:
        yield gateway


def connect(gw: Gateway) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def head(path: str = "/openai/v1/chat/completions", length: int = len(BODY)) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def read_answer(sock: socket.socket, within: float) -> tuple[int, dict | None, float]:
    """(status, JSON body, seconds until the connection closed); status 0 if closed without one."""
    started = time.monotonic()
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the gateway still held the connection after {within}s: {data!r}") from None
    except ConnectionResetError:
        pass
    took = time.monotonic() - started
    if not data:
        return 0, None, took
    head_part, _, body = data.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(body) if body else None, took


def assert_request_timeout(status: int, body: dict | None) -> None:
    assert status == 408, (status, body)
    assert body is not None and body["error"]["code"] == "request_timeout", body
    assert "in time" in body["error"]["message"], body


def test_half_a_body_then_silence_is_cut_after_the_upload_timeout(gw: Gateway) -> None:
    with connect(gw) as sock:
        sock.sendall(head() + BODY[: len(BODY) // 2])
        status, body, took = read_answer(sock, within=UPLOAD_TIMEOUT + 5)
    assert_request_timeout(status, body)
    assert took < UPLOAD_TIMEOUT + 2


def test_a_body_dripped_a_byte_at_a_time_is_cut_too(gw: Gateway) -> None:
    """Each byte restarts an idle timer; the upload timeout counts from the start."""
    with connect(gw) as sock:
        sock.sendall(head())
        started = time.monotonic()
        sock.setblocking(True)
        for byte in BODY:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - started > UPLOAD_TIMEOUT + 3:
                raise AssertionError("the gateway kept taking a dripped body")
            time.sleep(0.3)
            sock.settimeout(0.01)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the gateway answered
            except TimeoutError:
                pass
            sock.settimeout(10)
        status, body, _ = read_answer(sock, within=5)
    assert_request_timeout(status, body)
    assert time.monotonic() - started < UPLOAD_TIMEOUT + 3


def test_headers_that_never_end_are_cut_after_the_headers_timeout(gw: Gateway) -> None:
    with connect(gw) as sock:
        sock.sendall(b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n")
        started = time.monotonic()
        for _ in range(10):
            try:
                sock.sendall(b"x-drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.3)
        status, body, _ = read_answer(sock, within=5)
    took = time.monotonic() - started
    assert took < HEADERS_TIMEOUT + 3
    assert_request_timeout(status, body)


def test_an_idle_connection_is_closed(gw: Gateway) -> None:
    with connect(gw) as sock:
        status, _, took = read_answer(sock, within=IDLE_TIMEOUT + 5)
    assert status == 0 and took < IDLE_TIMEOUT + 2


def test_connections_past_the_limit_are_refused_and_the_gateway_recovers(gw: Gateway) -> None:
    held = [connect(gw) for _ in range(MAX_CONNECTIONS + 8)]
    try:
        time.sleep(0.5)
        refused = 0
        for sock in held:
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    refused += 1  # Envoy closed it at once
            except TimeoutError:
                pass
            except ConnectionResetError:
                refused += 1
        assert refused >= 8, refused
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            resp = httpx.post(
                f"{gw.url}/openai/v1/chat/completions",
                content=BODY,
                headers={"content-type": "application/json"},
            )
            assert resp.status_code == 200, resp.text
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_long_stream_outlives_every_client_timeout(gw: Gateway) -> None:
    """The upload timeout stops once the request is sent: a stream longer than it is whole."""
    body = {**json.loads(BODY), "stream": True}
    # Chunks of 64 bytes every 250 ms: some seconds, longer than each limit.
    headers = {"x-mock-chunk-delay-ms": "250", "x-mock-chunk-bytes": "64"}
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{gw.url}/openai/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())
    took = time.monotonic() - started
    assert UPLOAD_TIMEOUT + IDLE_TIMEOUT < took < 25, f"the stream took {took:.1f}s: too short to tell"
    assert text.rstrip().endswith("data: [DONE]"), text[-200:]
