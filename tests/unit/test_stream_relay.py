"""The stream relay (extproc/stream_relay.py) between a client and a raw TCP provider on loopback.

The provider answers with chunked SSE and then, after its headers and a few chunks, closes (FIN),
resets (RST) or ends its body properly. The relay must pass the bytes through and end its own
body cleanly in every case; before the headers it must not answer at all (the caller, Envoy,
then retries or fails over as on a direct connection). End to end through Envoy:
tests/e2e/test_streams.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from extproc import stream_relay
from extproc.headers import RELAY_UPSTREAM

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nx-provider: 1\r\n\r\n"
EVENTS = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n']


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Provider:
    """A provider that answers every request with HEAD, EVENTS, then ``ending``."""

    def __init__(self, ending: str) -> None:
        self.ending = ending  # fin, rst, whole, stall, refuse (no answer at all: reset before headers)
        self.requests: list[bytes] = []
        self.let_go = asyncio.Event()  # (stall) the relay closed this provider connection
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        self.requests.append(head + await reader.readexactly(length))
        sock = writer.get_extra_info("socket")
        if self.ending == "refuse":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        writer.write(HEAD + b"".join(_chunk(e) for e in EVENTS) + _chunk(b'data: {"n":3, "half'))
        await writer.drain()
        await asyncio.sleep(0.05)
        if self.ending == "whole":
            writer.write(_chunk(b'"}\n\n') + b"0\r\n\r\n")
            await writer.drain()
            writer.close()
        elif self.ending == "stall":
            await reader.read()  # silent until the relay lets go
            self.let_go.set()
        elif self.ending == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()  # FIN mid-chunk


def _gateway(port: int, **up: Any) -> Any:
    upstream = SimpleNamespace(
        id="r/p", host="127.0.0.1", port=port, tls=False, sni=None, insecure_skip_verify=False, **up
    )
    return SimpleNamespace(upstreams_by_id={upstream.id: upstream})


def _run(ending: str, check: Callable[[Provider, str, stream_relay.Relay], Awaitable[None]]) -> None:
    async def main() -> None:
        provider = Provider(ending)
        server = await provider.start()
        listen = f"127.0.0.1:{_free_port()}"
        runner, relay = await stream_relay.start(_gateway(provider.port), listen)
        try:
            await check(provider, f"http://{listen}", relay)
        finally:
            await runner.cleanup()
            await relay.close()
            server.close()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(base: str, upstream: str = "r/p") -> httpx.Request:
    return httpx.Request(
        "POST",
        f"{base}/v1/chat/completions?x=1",
        headers={
            "host": "api.provider.example",
            "authorization": "Bearer provider-key",
            RELAY_UPSTREAM: upstream,
            "x-forwarded-proto": "http",
            "content-type": "application/json",
        },
        content=b'{"stream":true}',
    )


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_a_provider_cut_mid_body_ends_the_relayed_body_cleanly(ending: str) -> None:
    async def check(provider: Provider, base: str, relay: stream_relay.Relay) -> None:
        async with httpx.AsyncClient() as client:
            resp = await client.send(_request(base))  # a broken body would raise here
        assert resp.status_code == 200 and resp.headers["x-provider"] == "1"
        assert resp.headers["transfer-encoding"] == "chunked"
        # Every byte the provider sent before the cut, the half event too: ending it is the sidecar's.
        assert resp.content == b"".join(EVENTS) + b'data: {"n":3, "half'
        assert relay.cuts == 1

    _run(ending, check)


def test_a_whole_body_passes_unchanged_and_is_no_cut() -> None:
    async def check(provider: Provider, base: str, relay: stream_relay.Relay) -> None:
        async with httpx.AsyncClient() as client:
            resp = await client.send(_request(base))
        assert resp.content == b"".join(EVENTS) + b'data: {"n":3, "half"}\n\n'
        assert relay.cuts == 0

    _run("whole", check)


def test_the_provider_gets_the_request_as_sent_without_the_relays_own_headers() -> None:
    async def check(provider: Provider, base: str, relay: stream_relay.Relay) -> None:
        async with httpx.AsyncClient() as client:
            await client.send(_request(base))
        (sent,) = provider.requests
        head, _, body = sent.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert headers["host"] == "api.provider.example"  # the provider's name, as Envoy set it
        assert headers["authorization"] == "Bearer provider-key"  # set by the sidecar, passed on
        assert RELAY_UPSTREAM not in headers and "x-forwarded-proto" not in headers
        assert "user-agent" not in headers or headers["user-agent"].startswith("python-httpx")
        assert body == b'{"stream":true}'

    _run("whole", check)


def test_a_caller_that_lets_go_of_a_silent_stream_frees_the_providers_connection() -> None:
    """The gateway ended a stalled stream (streamIdleTimeout): Envoy closes its connection to the
    relay, and the relay closes the provider's at once, though the provider sends nothing more."""

    async def check(provider: Provider, base: str, relay: stream_relay.Relay) -> None:
        async with httpx.AsyncClient() as client:
            resp = await client.send(_request(base), stream=True)
            async for _ in resp.aiter_raw():
                break  # the first bytes, then away
            await resp.aclose()
        await asyncio.wait_for(provider.let_go.wait(), 2)

    _run("stall", check)


def test_a_failure_before_the_headers_resets_the_callers_connection() -> None:
    """No made-up answer: Envoy sees a reset before the response, as from the provider itself, so
    its retry policy (``reset``) and failover apply and its own error reply is the client's."""

    async def check(provider: Provider, base: str, relay: stream_relay.Relay) -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.TransportError):
                await client.send(_request(base))

    _run("refuse", check)


def test_an_unknown_upstream_is_refused_without_dialling_anything() -> None:
    async def check(provider: Provider, base: str, relay: stream_relay.Relay) -> None:
        async with httpx.AsyncClient() as client:
            resp = await client.send(_request(base, upstream="evil.example/x"))
        assert resp.status_code == 502
        assert provider.requests == []

    _run("whole", check)


def test_tls_to_providers_is_verified_unless_the_config_says_otherwise() -> None:
    verified = stream_relay.tls_context(insecure=False)
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    insecure = stream_relay.tls_context(insecure=True)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
