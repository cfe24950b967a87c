"""``/metrics`` over HTTP from the extproc sidecar: the gateway's metrics, then Envoy's own.

Envoy's metrics listener (:15020) routes ``/metrics`` here, so one scrape of :15020/metrics gets
both: this serves the gateway's registry (every worker's, in multiprocess mode) followed by
Envoy's ``/stats/prometheus``, fetched from its admin at scrape time. The families cannot clash
(Envoy's are all ``envoy_*``). If the admin does not answer, the gateway's part is still served.
``:15020/metrics/envoy`` is Envoy's alone, straight from its admin, for when this sidecar is down.

It runs in its own threads (http.server), never on the event loop. With several workers each
serves the same port (SO_REUSEPORT, like the gRPC port), and any of them answers with the whole.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("gateway.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class EnvoyStats:
    """Envoy's exposition from its admin; failures logged at most once a minute."""

    def __init__(self, url: str | None, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self._last_warning = 0.0

    def fetch(self) -> bytes:
        if not self.url:
            return b""
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                body: bytes = resp.read()
            return body if body.endswith(b"\n") or not body else body + b"\n"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning("metrics: Envoy's stats at %s did not answer (%s)", self.url, exc)
            return b""


def serve_metrics(
    listen: str, exposition: Callable[[], bytes], envoy: EnvoyStats, reuse_port: bool = False
) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; OSError if the address cannot be bound."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = exposition() + envoy.fetch()
            except Exception:
                log.exception("metrics: exposition failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

    host, _, port = listen.rpartition(":")
    server = _Server((host.strip("[]") or "0.0.0.0", int(port)), Handler, bind_and_activate=False)
    server.reuse_port = reuse_port
    try:
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    shared = " (port shared with other workers)" if reuse_port else ""
    log.info("metrics on http://%s/metrics%s", listen, shared)
    return server
