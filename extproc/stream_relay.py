"""The stream relay: the provider leg of streamed answers, so a cut provider connection ends well.

Why it exists (README "When a provider cuts a stream"): when a provider's connection closes (FIN)
or resets (RST) after its response headers, Envoy can only reset the client's stream; every
filter, the ext_proc one included, is torn down with it, so no error event can be written. With
``limits.streamRelay`` on, a streamed request's provider leg goes Envoy -> this relay (plain
HTTP/1.1, inside the extproc process) -> provider (TLS verified here). The relay forwards the
answer's bytes as they come; when the provider's connection breaks mid-body it ends its response
to Envoy cleanly (the chunked body's last chunk). Envoy then sees a body that ended early, and the
router phase ends the client's stream with its error event, as for any stream that ends without
its last event.

What the relay is told, and by whom: ``x-gw-relay-upstream`` names the gateway upstream (its id
in the config this process loaded), set by a sidecar phase; clients cannot send ``x-gw-``
headers. The relay dials only upstreams of its own config, with their TLS settings: the system
CAs and the upstream's SNI (or host) as the name the certificate must carry, unless the config
says ``insecureSkipVerify``. It never adds credentials; the sidecar set them on the request.

Before the provider's headers, a failure (refused, reset, TLS) aborts the connection to Envoy,
so Envoy retries or fails over exactly as it would on a direct connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from extproc.gateway import Gateway, Upstream
from extproc.headers import RELAY_UPSTREAM
from extproc.render.common import split_hostport

log = logging.getLogger("gateway.relay")

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Hop-by-hop (RFC 9110 7.6.1), and what the relay frames itself: the body is always chunked to
# Envoy, so that a cut can end it cleanly whatever length the provider announced.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# (x-forwarded-*: the egress allowlist's, should a sidecar phase have left one.)
_DROP = _HOP | {RELAY_UPSTREAM, "x-forwarded-proto", "x-forwarded-for", "x-envoy-external-address"}
# aiohttp's client adds these unless told not to; the relay sends what Envoy sent, nothing more.
_NO_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# What a broken provider connection raises while the body is read.
_CUT = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError, TimeoutError)


def tls_context(insecure: bool, cafile: str = CA_BUNDLE) -> ssl.SSLContext:
    """Verification as Envoy's own provider clusters do it (render/clusters.py, ``_tls_socket``):
    the system CAs and the dialled name (Python checks IP addresses against IP SANs)."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cafile)


@dataclass
class Relay:
    gw: Gateway
    cafile: str = CA_BUNDLE
    cuts: int = 0  # provider connections that broke mid-body (tests, logs)
    _session: aiohttp.ClientSession | None = None
    _tls: dict[bool, ssl.SSLContext] = field(default_factory=dict)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout: Envoy's timers bound the stream (its idle and route timeouts), and
            # the router phase its silence. Connect as Envoy's provider clusters do (5 s).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,  # bytes as the provider sent them; the sidecar decodes
                skip_auto_headers=_NO_AUTO,
            )
        return self._session

    def _ssl(self, up: Upstream) -> ssl.SSLContext | bool:
        if not up.tls:
            return True  # (plain http: not used)
        insecure = up.insecure_skip_verify
        if insecure not in self._tls:
            self._tls[insecure] = tls_context(insecure, self.cafile)
        return self._tls[insecure]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        up = self.gw.upstreams_by_id.get(request.headers.get(RELAY_UPSTREAM, ""))
        if up is None:
            # Only a sidecar phase sends requests here; without a known upstream nothing is dialled.
            log.error("relay: request without a known %s header", RELAY_UPSTREAM)
            return web.Response(status=502, text="stream relay: unknown upstream")
        body = await request.content.read()
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROP)
        host = f"[{up.host}]" if ":" in up.host else up.host
        url = f"{'https' if up.tls else 'http'}://{host}:{up.port}{request.raw_path}"
        try:
            upstream = await self.session().request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                ssl=self._ssl(up),
                server_hostname=(up.sni or up.host) if up.tls else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("relay: %s before its response headers: %s", up.id, exc)
            _abort(request)  # Envoy sees a reset before headers: its retries and failover apply
            raise web.HTTPBadGateway() from None
        try:
            return await self._answer(request, upstream, up)
        finally:
            upstream.release()

    async def _answer(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, up: Upstream
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.raw_headers:
            name = key.decode("latin-1")
            if name.lower() not in _HOP:
                resp.headers.add(name, value.decode("latin-1"))
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        while True:
            try:
                data = await upstream.content.readany()
            except _CUT as exc:
                # The provider's connection broke after its headers: end the body cleanly, so the
                # router phase, seeing a stream without its last event, ends the client's with an
                # error event. (A write below that fails is Envoy gone: it propagates.)
                self.cuts += 1
                upstream.close()
                log.info("relay: %s cut its stream mid-body (%s); ending the body", up.id, type(exc).__name__)
                break
            if not data:
                break
            try:
                await resp.write(data)
            except ConnectionError:  # Envoy let go (the client went, or the gateway ended the stream)
                upstream.close()
                return resp
        await resp.write_eof()
        return resp

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None:  # an RST, as a failed provider connection would give Envoy
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


async def start(gw: Gateway, listen: str, reuse_port: bool = False) -> tuple[web.BaseRunner, Relay]:
    """Serve the relay on ``listen`` (host:port) on this loop; cleanup the runner, then close."""
    relay = Relay(gw)
    # Envoy's connections to the relay go idle after 60 s (render/clusters.py): the relay keeps
    # them longer, so Envoy never sends a request on a connection the relay is closing.
    # A connection Envoy closes cancels its handler (handler_cancellation): the provider's
    # connection goes at once, even while the provider is silent (a stall the gateway ended).
    server = web.Server(relay.handle, handler_cancellation=True, access_log=None, keepalive_timeout=300)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    host, port = split_hostport(listen)
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    log.info("stream relay on %s", listen)
    return runner, relay
